"""Random streams of a batch of Lorenz-96 experiments: experiment ``k`` of ``--batch B --seed s`` is run ``s + k``.

Every experiment owns six independent streams, spawned from its own seed::

    truth, observations, init, method, emulator, ranks = SeedSequence(s + k).spawn(6)     k = 0 .. B-1

``ranks`` breaks the (rare) ties of the truth with a member in the rank histogram. It is spawned last, so the
first five are the streams of ``spawn(5)``: the numbers of every run stayed the same when it was added.

A :class:`BatchGenerator` holds one :class:`numpy.random.Generator` per experiment and draws an array with a
leading batch axis ``[B, ...]`` by filling slice ``k`` from experiment ``k``'s generator. Experiment ``k`` so
consumes exactly the numbers the single run with seed ``s + k`` consumes, whatever ``B`` is and whatever the
other experiments do, and ``B = 1`` is the plain stream of one generator (the numbers of a single run did not
change when batches became per-experiment).

The arithmetic of a batch is per experiment too (compiled kernels loop over experiments, ``np.matmul`` and
``np.linalg`` act matrix by matrix), so a batch reproduces the single runs bit for bit; ``tests/test_l96_seeding.py``
checks it for every method over hundreds of cycles.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

__all__ = ["STREAMS", "BatchGenerator", "experiment_streams", "is_generator"]

#: The random streams of one experiment, in the order they are spawned from its seed.
STREAMS = ("truth", "observations", "init", "method", "emulator", "ranks")


class BatchGenerator:
    """One random generator per experiment of a batch, drawn as one array with a leading batch axis.

    Parameters
    ----------
    generators : sequence of np.random.Generator
        Experiment ``k``'s generator at position ``k``.

    Examples
    --------
    >>> rng = BatchGenerator([np.random.default_rng(3), np.random.default_rng(4)])
    >>> z = rng.standard_normal((2, 5))                                  # [B, 5]
    >>> bool((z[1] == np.random.default_rng(4).standard_normal(5)).all())
    True
    """

    def __init__(self, generators: Sequence[np.random.Generator]) -> None:
        self.generators = tuple(generators)
        if not self.generators or not all(isinstance(g, np.random.Generator) for g in self.generators):
            raise ValueError("a BatchGenerator needs at least one numpy Generator, one per experiment.")

    @property
    def batch(self) -> int:
        """Number ``B`` of experiments."""
        return len(self.generators)

    def __len__(self) -> int:
        return len(self.generators)

    def __getitem__(self, k: int) -> np.random.Generator:
        """Experiment ``k``'s own generator (for code that handles one experiment at a time)."""
        return self.generators[k]

    def __iter__(self) -> Iterator[np.random.Generator]:
        return iter(self.generators)

    def standard_normal(self, size: int | tuple[int, ...]) -> np.ndarray:
        """``N(0, 1)`` draws of shape ``size = (B, ...)``: slice ``k`` from experiment ``k``'s generator.

        Raises
        ------
        ValueError
            When the leading axis of ``size`` is not the batch size: the caller mixed up the experiments.
        """
        shape = (size,) if isinstance(size, (int, np.integer)) else tuple(size)
        if not shape or shape[0] != self.batch:
            raise ValueError(
                f"a batch of {self.batch} experiments draws arrays with a leading batch axis of size {self.batch}, "
                f"asked for shape {shape}; put the experiments on axis 0 (or pass generators[k] per experiment)."
            )
        out = np.empty(shape)
        for k, generator in enumerate(self.generators):
            generator.standard_normal(out=out[k : k + 1])
        return out

    def __repr__(self) -> str:
        return f"BatchGenerator(batch={self.batch})"


def experiment_streams(seed: int, batch: int) -> dict[str, BatchGenerator]:
    """The :data:`STREAMS` of experiments ``seed .. seed + batch - 1``, each a :class:`BatchGenerator` ``[B]``.

    ``experiment_streams(s, B)[name][k]`` is ``experiment_streams(s + k, 1)[name][0]`` by construction.
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}; use e.g. --seed 0.")
    if int(batch) != batch or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}; use e.g. --batch 1.")
    per_experiment = [np.random.SeedSequence(int(seed) + k).spawn(len(STREAMS)) for k in range(int(batch))]
    return {
        name: BatchGenerator([np.random.default_rng(children[i]) for children in per_experiment])
        for i, name in enumerate(STREAMS)
    }


def is_generator(rng: object) -> bool:
    """Whether ``rng`` can be passed to a method's ``analyse``: a numpy Generator or a :class:`BatchGenerator`."""
    return isinstance(rng, (np.random.Generator, BatchGenerator))
