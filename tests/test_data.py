"""Tests of npmf.data: reading, checking, downloading, splitting ratings."""

import functools
import hashlib
import http.server
import io
import re
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from npmf.data import (
    CANONICAL_FOLDS,
    DATASETS,
    FORMATS,
    DataError,
    canonical_split,
    data_home,
    dataset_path,
    download,
    load_dataset,
    random_split,
    read_ratings,
    read_titles,
    tutorial_split,
)

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, name, text, encoding="utf-8"):
    """Write ``text`` to ``tmp_path / name`` and return the path."""
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def ratings_frame(rows):
    """Build a ratings table from ``(user, item, rating)`` rows."""
    return pd.DataFrame(rows, columns=["user", "item", "rating"])


@pytest.fixture(scope="module")
def ml100k(data_dir):
    """The full ml-100k ratings table, read once."""
    return load_dataset("ml-100k", data_dir)


# ------------------------------------------------------------- real data


def test_load_dataset_ml100k_counts(ml100k):
    """ml-100k has 100000 ratings by 943 users of 1682 items, typed columns."""
    assert ml100k.shape == (100000, 4)
    assert ml100k["user"].nunique() == 943
    assert ml100k["item"].nunique() == 1682
    assert list(ml100k.columns) == ["user", "item", "rating", "timestamp"]
    assert ml100k["user"].dtype == np.int64
    assert ml100k["rating"].dtype == np.float64
    assert ml100k.index.equals(pd.RangeIndex(100000))
    # first line of u.data: 196 242 3 881250949
    assert ml100k.iloc[0].tolist() == [196, 242, 3.0, 881250949]


def test_tutorial_split_matches_keras_tutorial_rows(ml100k):
    """The tutorial split gives 80000/20000 and the tutorial's first rows."""
    train, test = tutorial_split(ml100k)

    assert (len(train), len(test)) == (80000, 20000)
    head = test.head(6)[["user", "item", "rating"]].to_numpy().tolist()
    assert head == [
        [468, 51, 3],
        [92, 780, 3],
        [555, 489, 5],
        [940, 69, 2],
        [181, 1350, 1],
        [320, 195, 5],
    ]


def test_canonical_split_u1_sizes(data_dir):
    """u1.base and u1.test hold 80000 and 20000 ratings."""
    train, test = canonical_split("u1", data_dir)

    assert (len(train), len(test)) == (80000, 20000)
    assert set(train.columns) == {"user", "item", "rating", "timestamp"}


def test_canonical_split_rejects_unknown_fold(data_dir):
    """A fold outside u1..u5, ua, ub is refused, listing the valid ones."""
    assert CANONICAL_FOLDS == ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
    with pytest.raises(DataError, match=r"fold must be one of .*'u5'.*got 'u6'"):
        canonical_split("u6", data_dir)


def test_read_ratings_ml_latest_small_half_stars(data_dir):
    """ml-latest-small has 100836 ratings, all half stars from 0.5 to 5."""
    path = data_dir / "ml-latest-small" / "ratings.csv"
    if not path.is_file():
        pytest.skip(f"ml-latest-small not found under {data_dir}")

    ratings = read_ratings(path, "ml-latest")

    assert len(ratings) == 100836
    assert sorted(ratings["rating"].unique()) == [k / 2 for k in range(1, 11)]
    assert ratings["user"].nunique() == 610


def test_read_titles_ml100k_decodes_latin1(data_dir):
    """u.item titles are read as latin-1, keyed by int item id."""
    titles = read_titles("ml-100k", data_dir)

    assert len(titles) == 1682
    assert titles[1] == "Toy Story (1995)"
    assert titles[1104] == "C'est arrivé près de chez vous (1992)"


def test_read_titles_ml_latest_keeps_quoted_commas(data_dir):
    """movies.csv titles with quoted commas come back whole."""
    path = data_dir / "ml-latest-small" / "movies.csv"
    if not path.is_file():
        pytest.skip(f"ml-latest-small not found under {data_dir}")

    titles = read_titles(path)

    assert len(titles) == 9742
    assert titles[11] == "American President, The (1995)"


def test_read_titles_ml1m_movies_dat(tmp_path):
    """movies.dat is split on '::' only, decoded as latin-1."""
    text = (
        "1::Toy Story (1995)::Animation|Children's|Comedy\n"
        "260::Star Wars: Episode IV - A New Hope (1977)::Action\n"
        "3::Misérables, Les (1995)::Drama\n"
    )
    path = write(tmp_path, "movies.dat", text, encoding="latin-1")

    titles = read_titles(path)

    assert titles == {
        1: "Toy Story (1995)",
        260: "Star Wars: Episode IV - A New Hope (1977)",
        3: "Misérables, Les (1995)",
    }


def test_read_titles_rejects_unknown_file(tmp_path):
    """A titles file of an unknown name is refused, naming the known ones."""
    path = write(tmp_path, "titles.txt", "1|x\n")
    with pytest.raises(DataError, match=r"unknown titles file .*titles\.txt"):
        read_titles(path)


# ------------------------------------------------------------ locations


def test_datasets_pin_real_checksums():
    """Every dataset has a GroupLens url, a 64-hex sha256, a known format."""
    assert set(DATASETS) == {"ml-100k", "ml-1m", "ml-latest-small", "ml-25m"}
    for name, info in DATASETS.items():
        assert (
            info["url"] == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        )
        assert re.fullmatch(r"[0-9a-f]{64}", info["sha256"])
        assert info["format"] in FORMATS
    # from TFDS url_checksums/movielens.txt
    assert DATASETS["ml-100k"]["sha256"].startswith("50d2a982c669")


def test_data_home_prefers_argument_then_env(tmp_path, monkeypatch):
    """data_dir wins over NPMF_DATA, which wins over the default."""
    monkeypatch.setenv("NPMF_DATA", str(tmp_path / "env"))

    assert data_home(tmp_path / "arg") == tmp_path / "arg"
    assert data_home() == tmp_path / "env"


def test_data_home_defaults_to_checkout_data(monkeypatch):
    """Without argument or NPMF_DATA a checkout uses its own data/ folder."""
    monkeypatch.delenv("NPMF_DATA", raising=False)

    assert data_home() == REPO / "data"


def test_dataset_path_missing_says_how_to_get_it(tmp_path):
    """A missing dataset names the path looked at and the download command."""
    expected = re.escape(str(tmp_path / "ml-1m" / "ratings.dat"))
    with pytest.raises(DataError, match=expected) as info:
        dataset_path("ml-1m", tmp_path)
    assert "npmf download ml-1m" in str(info.value)
    assert "NPMF_DATA" in str(info.value)


def test_dataset_path_rejects_unknown_name(tmp_path):
    """An unknown dataset name is refused, listing the known names."""
    with pytest.raises(DataError, match=r"unknown dataset 'ml-10k'; known: ml-100k"):
        dataset_path("ml-10k", tmp_path)


# -------------------------------------------------------------- download


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static file handler that does not log to stderr."""

    def log_message(self, format, *args):
        """Drop the request log."""


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """Serve files on 127.0.0.1; ``serve(name, data)`` returns the url."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def put(name, data):
        (root / name).write_bytes(data)
        return f"http://127.0.0.1:{server.server_address[1]}/{name}"

    yield put
    server.shutdown()
    server.server_close()
    thread.join()


def tiny_zip(members):
    """Return the bytes of a zip holding ``members`` (name -> bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


ML100K_MEMBERS = {
    "ml-100k/u.data": b"1\t10\t4\t100\n2\t10\t3\t200\n",
    "ml-100k/u.item": "10|Café (1999)|01-Jan-1999\n".encode("latin-1"),
}


def test_download_fetches_verifies_and_unzips(tmp_path, serve, monkeypatch):
    """A zip with the pinned sha256 is unpacked into <home>/<folder>."""
    data = tiny_zip(ML100K_MEMBERS)
    info = {
        **DATASETS["ml-100k"],
        "url": serve("ml-100k.zip", data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "n_ratings": 2,
    }
    monkeypatch.setitem(DATASETS, "ml-100k", info)
    home = tmp_path / "home"

    ratings = load_dataset("ml-100k", home, download=True)

    assert ratings[["user", "item", "rating"]].to_numpy().tolist() == [
        [1, 10, 4],
        [2, 10, 3],
    ]
    assert read_titles("ml-100k", home) == {10: "Café (1999)"}
    assert sorted(p.name for p in home.iterdir()) == ["ml-100k"]
    assert download("ml-100k", home) == home / "ml-100k"


def test_load_refuses_a_named_dataset_cut_short(data_dir, tmp_path):
    """A u.data cut inside a timestamp parses, but its count gives it away."""
    lines = (data_dir / "ml-100k" / "u.data").read_bytes().splitlines(keepends=True)
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    # 50,000 whole lines and the next one without its timestamp's last digits
    (folder / "u.data").write_bytes(b"".join(lines[:50_000]) + lines[50_000][:-4])

    with pytest.raises(DataError) as info:
        load_dataset("ml-100k", tmp_path)
    message = str(info.value)
    assert str(folder / "u.data") in message
    assert "50,001 ratings where ml-100k has 100,000" in message
    assert "npmf download ml-100k" in message


def test_download_wrong_hash_leaves_nothing(tmp_path, serve, monkeypatch):
    """A sha256 mismatch raises and leaves no zip, folder or temp file."""
    data = tiny_zip(ML100K_MEMBERS)
    info = {
        **DATASETS["ml-100k"],
        "url": serve("ml-100k.zip", data),
        "sha256": "0" * 64,
    }
    monkeypatch.setitem(DATASETS, "ml-100k", info)
    home = tmp_path / "home"

    with pytest.raises(DataError, match=r"sha256 of http://127\.0\.0\.1:\d+/ml-100k"):
        download("ml-100k", home)
    assert list(home.iterdir()) == []


def test_download_bad_archive_leaves_nothing(tmp_path, serve, monkeypatch):
    """A verified zip without the ratings file raises and leaves nothing."""
    data = tiny_zip({"other/u.data": b"1\t2\t3\t4\n"})
    info = {
        **DATASETS["ml-100k"],
        "url": serve("ml-100k.zip", data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    monkeypatch.setitem(DATASETS, "ml-100k", info)
    home = tmp_path / "home"

    with pytest.raises(DataError, match=r"has no ml-100k/u\.data"):
        download("ml-100k", home)
    assert list(home.iterdir()) == []


def test_download_refuses_partial_folder(tmp_path):
    """A dataset folder without its ratings file is not overwritten."""
    (tmp_path / "ml-100k").mkdir()

    with pytest.raises(DataError, match=r"ml-100k exists but has no u\.data; remove"):
        download("ml-100k", tmp_path)


def test_download_refuses_unpinned_dataset(tmp_path, monkeypatch):
    """A dataset without a pinned sha256 is never fetched."""
    info = {**DATASETS["ml-1m"], "url": "http://127.0.0.1:9/none.zip", "sha256": None}
    monkeypatch.setitem(DATASETS, "ml-1m", info)

    with pytest.raises(DataError, match=r"'ml-1m' has no pinned sha256"):
        download("ml-1m", tmp_path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------ ids and headers


def test_read_ratings_keeps_sparse_huge_ids(tmp_path):
    """Ids that are sparse, huge or start at 1 keep their values as int64."""
    text = (
        "10\t1\t4\t1\n20\t114530\t3\t2\n30\t193609\t5\t3\n"
        "40\t1\t2\t4\n700001\t114530\t1\t5\n"
    )
    ratings = read_ratings(write(tmp_path, "u.data", text), "ml-100k")

    assert ratings["user"].tolist() == [10, 20, 30, 40, 700001]
    assert ratings["item"].tolist() == [1, 114530, 193609, 1, 114530]
    assert ratings["user"].dtype == np.int64
    assert ratings["item"].dtype == np.int64


def test_read_ratings_keeps_non_canonical_ids_as_text(tmp_path):
    """A column with '007', '-5' or a too-large id stays text, unchanged."""
    text = "user,item,rating\n007,a,4\n7,b,3\n-5,c,2\n99999999999999999999,d,1\n"
    ratings = read_ratings(write(tmp_path, "r.csv", text), "csv")

    assert ratings["user"].tolist() == ["007", "7", "-5", "99999999999999999999"]
    assert ratings["item"].tolist() == ["a", "b", "c", "d"]


def test_read_ratings_csv_header_is_not_a_user(tmp_path):
    """A header user,item,rating and 4 rows give 4 ratings, no user 'user'."""
    text = "user,item,rating\n1,10,4\n2,10,3\n3,11,5\n4,12,1\n"
    ratings = read_ratings(write(tmp_path, "r.csv", text), "csv")

    assert len(ratings) == 4
    assert ratings["user"].tolist() == [1, 2, 3, 4]
    assert ratings["rating"].tolist() == [4.0, 3.0, 5.0, 1.0]


def test_read_ratings_csv_named_columns_in_any_order(tmp_path):
    """user_col, item_col and rating_col pick columns by header name."""
    text = "stars,movie,who,timestamp\n4.5,m1,alice,7\n3,m2,bob,8\n"
    path = write(tmp_path, "r.csv", text)

    ratings = read_ratings(
        path, "csv", user_col="who", item_col="movie", rating_col="stars"
    )

    assert ratings.to_dict("list") == {
        "user": ["alice", "bob"],
        "item": ["m1", "m2"],
        "rating": [4.5, 3.0],
        "timestamp": [7, 8],
    }


def test_read_ratings_csv_without_header_reads_by_position(tmp_path):
    """An all-numeric first line is data: columns by position."""
    ratings = read_ratings(write(tmp_path, "r.csv", "1,10,4\n2,10,3\n"), "csv")

    assert ratings["user"].tolist() == [1, 2]
    assert ratings["rating"].tolist() == [4.0, 3.0]


@pytest.mark.parametrize(
    ("format", "text"),
    [
        ("ml-100k", "user\titem\trating\ttimestamp\n1\t10\t4\t100\n2\t10\t3\t200\n"),
        ("ml-1m", "UserID::MovieID::Rating::Timestamp\n1::10::4::100\n2::10::3::200\n"),
    ],
)
def test_read_ratings_detects_header_in_headerless_format(tmp_path, format, text):
    """Line 1 with a non-numeric rating before numeric ones is skipped."""
    ratings = read_ratings(write(tmp_path, "r.txt", text), format)

    assert ratings["user"].tolist() == [1, 2]
    assert ratings["timestamp"].tolist() == [100, 200]


def test_read_ratings_declared_header_is_obeyed(tmp_path):
    """header=True skips line 1; header=False reads it as data and fails."""
    path = write(tmp_path, "u.data", "a\tb\tc\td\n1\t1\t4\t100\n")

    assert len(read_ratings(path, "ml-100k", header=True)) == 1
    with pytest.raises(DataError, match=r"line 1, column 3 \(rating\): got 'c'"):
        read_ratings(path, "ml-100k", header=False)


def test_read_ratings_ids_fit_idmap(tmp_path):
    """Both int64 and text id columns build an IdMap that round-trips."""
    from npmf.ids import IdMap

    text = "user,item,rating\n700001,a,4\n10,b,3\n700001,c,2\n"
    ratings = read_ratings(write(tmp_path, "r.csv", text), "csv")

    for column in ("user", "item"):
        ids = IdMap.from_values(ratings[column])
        assert (
            ids.to_raw(ids.to_index(ratings[column])).tolist()
            == ratings[column].tolist()
        )


def test_read_ratings_declared_header_missing_column(tmp_path):
    """header=True on an all-numeric first line names line 1 and the column."""
    path = write(tmp_path, "r.csv", "1,10,4\n2,10,3\n")

    expected = r"r\.csv, line 1: no column 'user' in the header .*pass header=False"
    with pytest.raises(DataError, match=expected):
        read_ratings(path, "csv", header=True)


def test_read_ratings_detected_header_missing_column(tmp_path):
    """A header without the named column names line 1 and what to pass."""
    path = write(tmp_path, "r.csv", "userId,movieId,rating\n1,10,4\n")

    with pytest.raises(DataError, match=r"line 1: no column 'user' .*pass user_col="):
        read_ratings(path, "csv")


# ----------------------------------------------------- malformed files


@pytest.mark.parametrize(
    ("format", "text", "tried", "hint"),
    [
        ("csv", "1\t10\t4\t5\n2\t10\t3\t5\n", "','", r"contains tabs: .*sep='\\t'"),
        ("ml-100k", "1,10,4,5\n2,10,3,5\n", r"'\\t'", "contains commas: .*sep=','"),
        ("ml-100k", "1::10::4::5\n", r"'\\t'", "sep='::' \\(format 'ml-1m'\\)"),
    ],
)
def test_read_ratings_wrong_delimiter_suggests_the_right_one(
    tmp_path, format, text, tried, hint
):
    """A delimiter splitting nothing names file, line, delimiter and a fix."""
    path = write(tmp_path, "r.txt", text)

    expected = rf"r\.txt, line 1: splitting on {tried} gives 1 field.*{hint}"
    with pytest.raises(DataError, match=expected):
        read_ratings(path, format)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no ratings, the file is empty or blank"),
        ("\n\n", "no ratings, the file is empty or blank"),
        ("user,item,rating\n", "no ratings, only a header on line 1"),
    ],
)
def test_read_ratings_never_returns_an_empty_table(tmp_path, text, message):
    """A file without a single rating row raises, naming the file."""
    with pytest.raises(DataError, match=rf"r\.csv: {message}"):
        read_ratings(write(tmp_path, "r.csv", text), "csv")


def test_read_ratings_lists_every_bad_rating(tmp_path):
    """Empty, e, NaN, inf, 4_0, 1e3 land in ONE error with line and column."""
    text = "1\t1\t4\t100\n1\t2\t\t100\n1\t3\te\t100\n1\t4\tNaN\t100\n"
    text += "1\t5\tinf\t100\n1\t6\t4_0\t100\n1\t7\t1e3\t100\n1\t8\t3.5\t100\n"
    path = write(tmp_path, "u.data", text)

    with pytest.raises(DataError, match=r"u\.data: 6 problem\(s\)") as info:
        read_ratings(path, "ml-100k")
    message = str(info.value)
    for line, value in [
        (2, ""),
        (3, "e"),
        (4, "NaN"),
        (5, "inf"),
        (6, "4_0"),
        (7, "1e3"),
    ]:
        assert f"line {line}, column 3 (rating): got {value!r}" in message
    assert "line 1," not in message and "line 8," not in message


def test_read_ratings_lists_wrong_column_counts(tmp_path):
    """Too few or too many fields are listed per line, with the delimiter."""
    text = "1\t1\t4\t100\n1\t2\t3\n1\t3\t3\t100\t9\n1\t4\t\t100\n"
    path = write(tmp_path, "u.data", text)

    with pytest.raises(DataError, match=r"3 problem\(s\)") as info:
        read_ratings(path, "ml-100k")
    message = str(info.value)
    assert "line 2: 3 field(s) splitting on '\\t', expected 4 (user, item" in message
    assert "line 3: 5 field(s) splitting on '\\t', expected 4" in message
    assert "line 4, column 3 (rating): got ''" in message


def test_read_ratings_line_numbers_count_blank_lines(tmp_path):
    """Blank lines are skipped but counted, as an editor numbers lines."""
    text = "1\t1\t4\t100\n\n\n1\t2\tx\t100\n"
    path = write(tmp_path, "u.data", text)

    with pytest.raises(DataError, match=r"line 4, column 3 \(rating\): got 'x'"):
        read_ratings(path, "ml-100k")


def test_read_ratings_refuses_empty_ids(tmp_path):
    """An empty user or item names its line and column."""
    path = write(tmp_path, "r.csv", "user,item,rating\n1,,4\n,2,3\n")

    with pytest.raises(DataError, match=r"line 2, column 2 \(item\): empty id") as info:
        read_ratings(path, "csv")
    assert "line 3, column 1 (user): empty id" in str(info.value)


def test_read_ratings_non_utf8_names_line(tmp_path):
    """A csv that is not UTF-8 names the line and column of the bad byte."""
    path = write(tmp_path, "r.csv", "user,item,rating\nb\xe9,y,3\n", encoding="latin-1")

    with pytest.raises(DataError, match=r"r\.csv, line 2, column 2: byte b'\\xe9'"):
        read_ratings(path, "csv")


def test_read_ratings_missing_file_names_path(tmp_path):
    """A missing file raises with its path."""
    path = tmp_path / "nope" / "u.data"
    with pytest.raises(
        DataError, match=rf"ratings file not found: {re.escape(str(path))}"
    ):
        read_ratings(path, "ml-100k")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "xml"}, r"format must be one of \('ml-100k'.*got 'xml'"),
        ({"duplicates": "max"}, r"duplicates must be one of .*got 'max'"),
        ({"user_col": "who"}, r"apply only to format='csv'"),
        ({"sep": ""}, r"sep must be a non-empty one-line string, got ''"),
    ],
)
def test_read_ratings_rejects_bad_arguments(tmp_path, kwargs, message):
    """Bad arguments raise naming the parameter and the value."""
    path = write(tmp_path, "u.data", "1\t1\t4\t100\n")
    kwargs = {"format": "ml-100k", **kwargs}

    with pytest.raises(DataError, match=message):
        read_ratings(path, **kwargs)


def test_read_ratings_ml1m_and_ml_latest_formats(tmp_path):
    """'::' files and ratings.csv files read to the same table."""
    dat = write(tmp_path, "ratings.dat", "1::1193::5::978300760\n1::661::3.5::9\n")
    csv = "userId,movieId,rating,timestamp\n1,1193,5.0,978300760\n1,661,3.5,9\n"
    latest = write(tmp_path, "ratings.csv", csv)

    left, right = read_ratings(dat, "ml-1m"), read_ratings(latest, "ml-latest")

    pd.testing.assert_frame_equal(left, right)
    assert left["rating"].tolist() == [5.0, 3.5]


# ------------------------------------------------------------ duplicates


DUPLICATED = "1\t10\t4\t100\n2\t10\t5\t150\n1\t10\t2\t200\n"


def test_read_ratings_duplicates_error_lists_lines(tmp_path):
    """A pair on lines 1 and 3 is reported with both line numbers."""
    path = write(tmp_path, "u.data", DUPLICATED)

    with pytest.raises(DataError, match=r"user 1, item 10: lines 1, 3"):
        read_ratings(path, "ml-100k")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("last", [[2, 10, 5.0, 150], [1, 10, 2.0, 200]]),
        ("first", [[1, 10, 4.0, 100], [2, 10, 5.0, 150]]),
        ("mean", [[1, 10, 3.0, 200], [2, 10, 5.0, 150]]),
    ],
)
def test_read_ratings_duplicates_policies(tmp_path, policy, expected):
    """last/first keep that line in place; mean averages at the first line."""
    path = write(tmp_path, "u.data", DUPLICATED)

    ratings = read_ratings(path, "ml-100k", duplicates=policy)

    assert ratings.to_numpy().tolist() == expected
    assert ratings.index.equals(pd.RangeIndex(2))


# ---------------------------------------------------------------- splits


@pytest.mark.parametrize("split", [tutorial_split, random_split])
def test_split_after_dedup_keeps_pairs_on_one_side(tmp_path, split):
    """After de-duplication no (user, item) pair is in both train and test."""
    rows = [f"{u}\t{i}\t{(u + i) % 5 + 1}\t{u}\n" for u in range(20) for i in range(5)]
    path = write(tmp_path, "u.data", "".join(rows + rows[:30]))
    ratings = read_ratings(path, "ml-100k", duplicates="mean")

    train, test = split(ratings)

    pairs = [set(zip(side["user"], side["item"])) for side in (train, test)]
    assert len(ratings) == 100
    assert not pairs[0] & pairs[1]
    assert len(train) + len(test) == 100


@pytest.mark.parametrize("split", [tutorial_split, random_split])
def test_split_refuses_repeated_pairs(split):
    """A table with a repeated pair is refused before splitting."""
    ratings = ratings_frame(
        [(1, 1, 4.0), (1, 1, 2.0)] + [(2, k, 3.0) for k in range(8)]
    )

    with pytest.raises(DataError, match=r"1 repeated \(user, item\) row"):
        split(ratings)


def test_tutorial_split_refuses_an_empty_side():
    """One rating cannot be split: the counts are in the message."""
    with pytest.raises(
        DataError, match=r"cannot split 1 rating\(s\).*0 train and 1 test"
    ):
        tutorial_split(ratings_frame([(1, 1, 4.0)]))


def test_random_split_refuses_an_empty_side():
    """3 ratings at test_size=0.2 give floor(0.6) = 0 test ratings: refused."""
    ratings = ratings_frame([(1, 1, 4.0), (1, 2, 3.0), (2, 1, 5.0)])

    with pytest.raises(
        DataError, match=r"cannot split 3 rating\(s\).*3 train and 0 test"
    ):
        random_split(ratings, test_size=0.2)
    with pytest.raises(DataError, match=r"1 rating\(s\).*1 train and 0 test"):
        random_split(ratings.head(1), test_size=0.5)


def test_random_split_is_seeded_and_ordered():
    """One seed gives one split of floor(0.2 n) test rows, in table order."""
    ratings = ratings_frame([(u, i, 3.0) for u in range(10) for i in range(10)])

    train, test = random_split(ratings, test_size=0.2, seed=7)
    again, _ = random_split(ratings, test_size=0.2, seed=7)
    other, _ = random_split(ratings, test_size=0.2, seed=8)

    assert (len(train), len(test)) == (80, 20)
    assert train.index.equals(again.index)
    assert not train.index.equals(other.index)
    assert train.index.is_monotonic_increasing and test.index.is_monotonic_increasing
    assert sorted(train.index.tolist() + test.index.tolist()) == list(range(100))


@pytest.mark.parametrize("test_size", [0, 1, -0.1, 1.5, "0.2"])
def test_random_split_rejects_bad_test_size(test_size):
    """test_size must be a number strictly between 0 and 1."""
    ratings = ratings_frame([(1, k, 3.0) for k in range(10)])
    with pytest.raises(DataError, match=r"test_size must be a number in \(0, 1\)"):
        random_split(ratings, test_size=test_size)


def test_read_ratings_nul_in_id_kept_as_text(tmp_path):
    """Regression (new-user check): an id ending in a NUL byte stays text, no crash."""
    path = tmp_path / "nul.csv"
    path.write_bytes(b"user,item,rating\n1,10,4\n5\x00,10,3\n2,20,5\n")
    table = read_ratings(path, "csv")
    assert len(table) == 3
    assert table["user"].tolist() == ["1", "5\x00", "2"]
