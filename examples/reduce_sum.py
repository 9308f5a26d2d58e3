"""A map with one big reduce: the reduce's worker reads the mapped results from storage.

    python examples/reduce_sum.py
"""

import numpy as np

import lambdaexec


def featurize(seed):
    """Stands in for real work: a block of 'features'."""
    return np.random.default_rng(seed).normal(size=(1000, 16))


def fit(blocks):
    """One worker gets every block, in order: here, the mean feature vector."""
    return np.vstack(blocks).mean(axis=0)


if __name__ == "__main__":
    with lambdaexec.LambdaExecutor() as ex:
        blocks = ex.map_futures(featurize, range(200))
        model = ex.reduce(fit, blocks)
        print(model.result().round(3))
