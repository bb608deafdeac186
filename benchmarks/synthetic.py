"""Synthetic MovieLens-shaped ratings for scaling benchmarks.

Shapes follow the MovieLens releases (users, items, ratings); item
popularity and user activity are power laws, as in the real files. The
arrays are built in memory (int32 ids, float32 centred ratings) and never as
a users x items matrix.

    python -m benchmarks.synthetic ml-10m --out data/synthetic
"""

import argparse
from pathlib import Path

import numpy as np

SHAPES = {
    "ml-1m": (6_040, 3_706, 1_000_209),
    "ml-10m": (69_878, 10_677, 10_000_054),
    "ml-25m": (162_541, 59_047, 25_000_095),
}
"""(n_users, n_items, n_ratings) of each MovieLens release."""

ITEM_EXPONENT = 1.0
"""Zipf exponent of item popularity (rank r drawn with weight r ** -a)."""

USER_EXPONENT = 0.6
"""Zipf exponent of user activity; flatter than items, as in MovieLens."""


def _zipf_ids(n_ids, n_draws, exponent, rng, chunk=2_000_000):
    """Draw ids with P(rank r) proportional to r ** -exponent.

    Ranks are shuffled onto ids so popular ids are spread over the table.
    """
    weight = np.arange(1, n_ids + 1, dtype=np.float64) ** -exponent  # (n_ids,)
    cdf = np.cumsum(weight)  # (n_ids,)
    cdf /= cdf[-1]
    relabel = rng.permutation(n_ids).astype(np.int32)  # (n_ids,)
    out = np.empty(n_draws, dtype=np.int32)  # (n_draws,)
    for start in range(0, n_draws, chunk):
        stop = min(start + chunk, n_draws)
        rank = np.searchsorted(cdf, rng.random(stop - start))  # (chunk,)
        out[start:stop] = relabel[np.minimum(rank, n_ids - 1)]
    return out


def make_ratings(name, seed=0, fraction=1.0):
    """Generate a MovieLens-shaped rating set.

    Parameters
    ----------
    name : {"ml-1m", "ml-10m", "ml-25m"}
        Shape to copy.
    seed : int, default=0
        Seed of the generator.
    fraction : float, default=1.0
        Keep the table sizes and draw this fraction of the ratings (quick
        runs).

    Returns
    -------
    u, i : ndarray of shape (n,), int32
        User and item indices in ``[0, n_users)``, ``[0, n_items)``.
    r : ndarray of shape (n,), float32
        Ratings on the 1..5 star scale in half stars, minus their mean.
    n_users, n_items : int
        Table sizes.

    Notes
    -----
    A rating is ``clip(round2(3.5 + 0.5 z_u + 0.5 z_i + noise), 1, 5)`` with
    per-user and per-item offsets ``z`` and unit noise, so a model has
    something to learn. Pairs may repeat, which the trainers accept.
    """
    n_users, n_items, n_ratings = SHAPES[name]
    n = max(1, int(n_ratings * fraction))
    rng = np.random.default_rng(seed)

    # ids: power-law activity and popularity
    u = _zipf_ids(n_users, n, USER_EXPONENT, rng)  # (n,)
    i = _zipf_ids(n_items, n, ITEM_EXPONENT, rng)  # (n,)

    # ratings: user and item offsets plus noise, on the half-star grid
    z_user = rng.normal(0.0, 0.5, n_users).astype(np.float32)  # (n_users,)
    z_item = rng.normal(0.0, 0.5, n_items).astype(np.float32)  # (n_items,)
    r = rng.standard_normal(n, dtype=np.float32)  # (n,)
    # NOTE: in place and by chunks, so no full-size temporary raises the
    # peak memory the scaling benchmark measures
    for start in range(0, n, 2_000_000):
        part = r[start : start + 2_000_000]
        part += 3.5
        part += z_user[u[start : start + 2_000_000]]
        part += z_item[i[start : start + 2_000_000]]
        part *= 2
        np.round(part, out=part)
        part /= 2
        np.clip(part, 1.0, 5.0, out=part)
    r -= np.float32(r.mean(dtype=np.float64))
    return u, i, r, n_users, n_items


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(SHAPES))
    parser.add_argument("--out", default="data/synthetic")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    u, i, r, n_users, n_items = make_ratings(args.name, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.name}.npz"
    np.savez(path, u=u, i=i, r=r, n_users=n_users, n_items=n_items)
    print(f"wrote {len(r)} ratings to {path}")


if __name__ == "__main__":
    main()
