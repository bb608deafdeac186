"""Load MovieLens ratings, check them line by line, and split them.

Every rating table returned here has the columns ``user``, ``item``,
``rating`` (float64) and, when the file has one, ``timestamp``; raw ids are
kept exactly as written (see :func:`read_ratings`). Bad input raises
:class:`DataError`, whose message names the file, the line (1-based, as in a
text editor), the column and what was expected.

Notes
-----
Datasets live in a *data home* (:func:`data_home`): one folder per dataset,
as unzipped from GroupLens (``<home>/ml-100k/u.data``). :func:`download`
fetches a zip with pooch, checks its pinned sha256 and unzips it atomically.

References
----------
.. [1] F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and
   Context", ACM TiiS 5(4), 2015. https://grouplens.org/datasets/movielens/
"""

import csv
import logging
import math
import os
import re
import shutil
import tempfile
import zipfile
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

# NOTE: every sha256 and size below is the one published by TensorFlow
# Datasets in tensorflow/datasets, file
# tensorflow_datasets/url_checksums/movielens.txt (commit 1c076ac3c19c8ea8),
# and each agrees with independent pins in other public projects (e.g. the
# GroupLens-cross-checked ml-100k md5 0e33842e24a9c977be4e0107933c0723).
_GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
DATASETS = {
    "ml-100k": {
        "url": _GROUPLENS + "ml-100k.zip",
        "sha256": "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        "size": 4924029,
        "folder": "ml-100k",
        "n_ratings": 100_000,
        "ratings": "u.data",
        "format": "ml-100k",
        "titles": "u.item",
    },
    "ml-1m": {
        "url": _GROUPLENS + "ml-1m.zip",
        "sha256": "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        "size": 5917549,
        "folder": "ml-1m",
        "n_ratings": 1_000_209,
        "ratings": "ratings.dat",
        "format": "ml-1m",
        "titles": "movies.dat",
    },
    "ml-latest-small": {
        "url": _GROUPLENS + "ml-latest-small.zip",
        "sha256": "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        "size": 978202,
        "folder": "ml-latest-small",
        "n_ratings": 100_836,
        "ratings": "ratings.csv",
        "format": "ml-latest",
        "titles": "movies.csv",
    },
    "ml-25m": {
        "url": _GROUPLENS + "ml-25m.zip",
        "sha256": "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
        "size": 261978986,
        "folder": "ml-25m",
        "n_ratings": 25_000_095,
        "ratings": "ratings.csv",
        "format": "ml-latest",
        "titles": "movies.csv",
    },
}
FORMATS = ("ml-100k", "ml-1m", "ml-latest", "csv")
DUPLICATE_POLICIES = ("error", "last", "first", "mean")
CANONICAL_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")

# NOTE: ratings are parsed with a regex, not float(), which would also take
# "nan", "inf", "1e3" and "4_0".
_NUMBER = re.compile(r" *[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+) *")
_INT64_MAX = str(np.iinfo(np.int64).max)
_SECONDS = re.compile(r"[0-9]{1,18}")
_SIGNED_INT = re.compile(r"-?[0-9]{1,18}")
_UNIT_SEP = "\x1f"
_ROLES = ("user", "item", "rating", "timestamp")
_MAX_LISTED = 50
_SNIFF_LINES = 20
_DELIMITER_NAMES = {
    "\t": "tabs",
    ",": "commas",
    "::": "'::'",
    ";": "semicolons",
    "|": "'|'",
    " ": "spaces",
}


class DataError(ValueError):
    """Bad input to :mod:`npmf.data`: a missing file, a bad line or value.

    The message names the file, the line (1-based), the column and what was
    expected, and says what to do when that is known.
    """


@dataclass(frozen=True)
class _Spec:
    """How to tokenise one ratings format."""

    format: str
    sep: str
    quoting: int
    encoding: str
    names: tuple | None  # header names per role, or None (positional)
    strict_time: bool


@dataclass(frozen=True)
class _Layout:
    """Where the columns are in one particular file."""

    n_fields: int
    columns: dict  # role -> 0-based field position
    labels: dict  # role -> name used in messages
    header_line: int | None


# ---------------------------------------------------------------- locations


def data_home(data_dir=None):
    """Return the directory holding one folder per dataset.

    Parameters
    ----------
    data_dir : str or PathLike or None, default=None
        Explicit directory; wins over everything else.

    Returns
    -------
    pathlib.Path
        ``data_dir`` if given, else ``$NPMF_DATA`` if set, else the
        repository's ``data/`` folder when running from a checkout, else
        ``~/.cache/npmf``. The directory is not created.
    """
    # explicit argument, then environment
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("NPMF_DATA")
    if env:
        return Path(env).expanduser()

    # a checkout has pyproject.toml and data/ next to npmf/
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "data").is_dir():
        return checkout / "data"
    return Path.home() / ".cache" / "npmf"


def dataset_path(name, data_dir=None, download=False):
    """Return the folder of a named dataset, fetching it if asked.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS` (``"ml-100k"``, ``"ml-1m"``, ...).
    data_dir : str or PathLike or None, default=None
        Data home; see :func:`data_home`.
    download : bool, default=False
        Fetch the dataset when it is missing.

    Returns
    -------
    pathlib.Path
        ``<home>/<folder>``, containing the dataset's ratings file.

    Raises
    ------
    DataError
        If ``name`` is unknown, or the dataset is missing and ``download`` is
        False (the message says where it looked and how to get it).
    """
    # find the expected ratings file
    info = _dataset_info(name)
    home = data_home(data_dir)
    folder = home / info["folder"]
    if (folder / info["ratings"]).is_file():
        return folder

    # fetch it, or say how to
    if download:
        return _download(name, data_dir)
    raise DataError(
        f"dataset {name!r} not found: no {folder / info['ratings']} "
        f"(data home {home}, {_home_origin(data_dir)}); run `npmf download "
        f"{name}` to fetch it, or point NPMF_DATA / --data-dir at the "
        f"directory that contains {info['folder']}/"
    )


def download(name, data_dir=None):
    """Fetch a GroupLens zip, check its sha256 and unzip it into the home.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    data_dir : str or PathLike or None, default=None
        Data home; see :func:`data_home`. Created if missing.

    Returns
    -------
    pathlib.Path
        The dataset folder ``<home>/<folder>``.

    Raises
    ------
    DataError
        If the dataset has no pinned checksum, the download fails, the
        checksum differs or the archive lacks the expected files.

    Notes
    -----
    An existing folder is returned as is. The zip is written under a
    temporary name and renamed only once its sha256 matches (pooch); it is
    extracted into a temporary directory that is renamed into place, so an
    interrupted or rejected download leaves no partial dataset. The zip is
    deleted after extraction.
    """
    return _download(name, data_dir)


def _download(name, data_dir):
    """Fetch, verify and unpack ``name``; see :func:`download`."""
    # refuse to fetch without a pinned checksum
    info = _dataset_info(name)
    if not info.get("sha256"):
        raise DataError(
            f"dataset {name!r} has no pinned sha256, so it cannot be verified "
            f"and is not downloaded; fetch {info['url']} by hand and unzip it "
            f"into {data_home(data_dir)}"
        )

    # nothing to do when it is already there
    home = data_home(data_dir)
    folder = home / info["folder"]
    if (folder / info["ratings"]).is_file():
        logger.info("%s already present in %s", name, folder)
        return folder

    if folder.exists():
        raise DataError(
            f"{folder} exists but has no {info['ratings']}; remove it and run "
            f"`npmf download {name}` again"
        )

    # fetch and verify, then unpack
    home.mkdir(parents=True, exist_ok=True)
    archive = _fetch(name, info, home)
    try:
        _extract(archive, info, folder)
    finally:
        archive.unlink(missing_ok=True)
    return folder


def _dataset_info(name):
    """Return the :data:`DATASETS` entry of ``name`` or raise DataError."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def _home_origin(data_dir):
    """Say where the data home came from, for messages."""
    if data_dir is not None:
        return "from data_dir"
    if os.environ.get("NPMF_DATA"):
        return "from NPMF_DATA"
    return "default; NPMF_DATA is not set"


def _fetch(name, info, home):
    """Download the zip of ``info`` into ``home``; return its path."""
    import pooch
    import requests

    # pooch writes a temporary file and renames it only if the hash matches
    url = info["url"]
    logger.info("downloading %s to %s", url, home)
    try:
        path = pooch.retrieve(
            url,
            known_hash=f"sha256:{info['sha256']}",
            fname=f"{name}.zip",
            path=home,
            progressbar=False,
        )
    except ValueError as err:
        raise DataError(
            f"sha256 of {url} does not match the pinned {info['sha256']}; the "
            f"download was deleted and nothing was written to {home}: {err}"
        ) from err
    except (OSError, requests.RequestException) as err:
        raise DataError(
            f"could not download {url}: {err}; check the network, or fetch the "
            f"zip by hand and unzip it into {home}"
        ) from err
    return Path(path)


def _extract(archive, info, folder):
    """Unzip ``info['folder']`` from ``archive`` to ``folder``, atomically."""
    # extract into a temporary directory next to the target
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        with zipfile.ZipFile(archive) as zipped:
            _check_members(archive, zipped.namelist())
            zipped.extractall(tmp)

        # check the content, then rename it into place
        extracted = tmp / info["folder"]
        if not (extracted / info["ratings"]).is_file():
            raise DataError(
                f"{archive} has no {info['folder']}/{info['ratings']}; "
                "the archive does not match this dataset"
            )
        extracted.rename(folder)
    except zipfile.BadZipFile as err:
        raise DataError(f"{archive} is not a valid zip file: {err}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("unpacked %s", folder)


def _check_members(archive, members):
    """Refuse archive members that would land outside the extraction folder."""
    for member in members:
        parts = Path(member).parts
        if member.startswith(("/", "\\")) or ".." in parts:
            raise DataError(f"{archive} has an unsafe member path {member!r}")


# ----------------------------------------------------------------- ratings


def read_ratings(
    path,
    format,
    *,
    sep=None,
    user_col="user",
    item_col="item",
    rating_col="rating",
    header=None,
    duplicates="error",
):
    """Read a ratings file, checking every line.

    Parameters
    ----------
    path : str or PathLike
        Ratings file.
    format : {"ml-100k", "ml-1m", "ml-latest", "csv"}
        ``"ml-100k"``: ``user item rating timestamp`` separated by tabs, no
        header (``u.data``, ``u1.base``). ``"ml-1m"``: the same separated by
        ``::`` (``ratings.dat``). ``"ml-latest"``: comma-separated with the
        header ``userId,movieId,rating,timestamp`` (``ratings.csv`` of
        ml-latest-small, ml-25m; half-star ratings). ``"csv"``: any
        delimited file whose header names the columns ``user_col``,
        ``item_col``, ``rating_col`` and optionally ``timestamp``; without
        a header the columns are user, item, rating[, timestamp] by position.
    sep : str or None, default=None
        Delimiter; None uses the format's: a tab, ``"::"``, a comma, a
        comma.
    user_col, item_col, rating_col : str, default="user", "item", "rating"
        Header names of the user, item and rating columns; ``format="csv"``
        only.
    header : bool or None, default=None
        True: the first line is a header. False: there is none. None: detect
        it (see Notes).
    duplicates : {"error", "last", "first", "mean"}, default="error"
        What to do with a (user, item) pair rated on several lines.
        ``"error"`` raises, listing each pair with its line numbers.
        ``"last"`` keeps the last line of the pair (rating and timestamp)
        where it stands; ``"first"`` keeps the first. ``"mean"`` keeps one
        row at the first line with the mean rating and the latest timestamp.

    Returns
    -------
    pandas.DataFrame of shape (n_ratings, 3) or (n_ratings, 4)
        Columns ``user``, ``item``, ``rating`` (float64) and ``timestamp``
        when the file has one; rows in file order, index ``0..n_ratings-1``.
        Never empty.

    Raises
    ------
    DataError
        If the file is missing or empty, the delimiter is wrong (the message
        suggests the right one when the line shows it), a named column is
        missing, any line is malformed (one error listing every bad line,
        with line, column and value), or pairs repeat under
        ``duplicates="error"``.

    Notes
    -----
    Ids are read as text and kept exactly: a column becomes int64 only if
    every id is a canonical decimal integer (no sign, leading zero or space;
    fits int64), else it stays text, so ``"007"`` and ``"7"`` remain
    distinct. Sparse or huge ids cost nothing (see :class:`npmf.ids.IdMap`).

    Ratings must match ``[+-]?digits[.digits]`` (spaces around allowed);
    ``nan``, ``inf``, ``1e3`` and ``4_0`` are refused. In the MovieLens
    formats a timestamp must be a whole number of seconds; in ``"csv"`` it
    becomes int64 when every value is an integer and stays text otherwise.

    Header detection (``header=None``): in ``"ml-100k"`` and ``"ml-1m"`` the
    first line is skipped as a header when its rating field is not a number
    while the next line's is. In ``"csv"`` and ``"ml-latest"`` the first
    line is a header when it holds the column names, or when its third field
    is not a number (then a missing name is an error).

    Blank lines are skipped but counted, so line numbers match an editor.
    Line numbers assume one record per line (no quoted line breaks). At most
    50 problems are listed per error, followed by the total count.
    """
    # check the arguments and the file
    spec = _format_spec(format, sep, user_col, item_col, rating_col)
    _check_choice("duplicates", duplicates, DUPLICATE_POLICIES)
    _check_choice("header", header, (None, True, False))
    path = _existing_file(path, "ratings file")

    # find the delimiter, header and columns from the first lines
    layout = _sniff(path, spec, header)

    # read every field as text, check it, convert it
    fields = _read_fields(path, spec, layout)
    table, lines = _build_table(path, spec, layout, fields)

    # one row per (user, item) pair
    return _resolve_duplicates(path, table, lines, duplicates)


def _format_spec(format, sep, user_col, item_col, rating_col):
    """Validate the format arguments; return the tokeniser settings."""
    # the format and the column names
    _check_choice("format", format, FORMATS)
    given = {"user_col": user_col, "item_col": item_col, "rating_col": rating_col}
    for param, value in given.items():
        if not isinstance(value, str) or not value:
            raise DataError(f"{param} must be a non-empty string, got {value!r}")
    if format != "csv" and (user_col, item_col, rating_col) != _ROLES[:3]:
        raise DataError(
            f"user_col, item_col and rating_col apply only to format='csv', "
            f"got format={format!r} with {given}"
        )

    # the delimiter
    default_sep = {"ml-100k": "\t", "ml-1m": "::"}.get(format, ",")
    sep = default_sep if sep is None else sep
    if not isinstance(sep, str) or not sep or "\n" in sep or "\r" in sep:
        raise DataError(f"sep must be a non-empty one-line string, got {sep!r}")

    # the settings of each format
    if format in ("ml-100k", "ml-1m"):
        return _Spec(format, sep, csv.QUOTE_NONE, "latin-1", None, True)
    if format == "ml-latest":
        names = ("userId", "movieId", "rating", "timestamp")
        return _Spec(format, sep, csv.QUOTE_MINIMAL, "utf-8-sig", names, True)
    names = (user_col, item_col, rating_col, "timestamp")
    return _Spec(format, sep, csv.QUOTE_MINIMAL, "utf-8-sig", names, False)


def _check_choice(param, value, choices):
    """Raise DataError unless ``value`` is one of ``choices``."""
    if not any(value is choice or value == choice for choice in choices):
        raise DataError(f"{param} must be one of {choices}, got {value!r}")


def _existing_file(path, what):
    """Return ``path`` as a Path, or raise DataError naming it."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} not found: {path}")
    if not path.is_file():
        raise DataError(f"{what} is not a file: {path}")
    return path


def _records(path, spec):
    """Yield ``(line, fields)`` for every record, blank lines as ``[]``."""
    # a multi-character delimiter becomes one unit-separator character
    one_char = len(spec.sep) == 1
    delimiter = spec.sep if one_char else _UNIT_SEP
    last = 0
    try:
        with open(path, encoding=spec.encoding, newline="") as handle:
            lines = (
                handle if one_char else (s.replace(spec.sep, _UNIT_SEP) for s in handle)
            )
            reader = csv.reader(lines, delimiter=delimiter, quoting=spec.quoting)

            # number records by their first line, as an editor does
            for fields in reader:
                yield last + 1, fields
                last = reader.line_num
    except UnicodeDecodeError as err:
        raise _decode_error(path, spec.encoding) from err
    except csv.Error as err:
        raise DataError(f"{path}, line {last + 1}: {err}") from err


def _decode_error(path, encoding):
    """Return a DataError naming the first line that is not ``encoding``."""
    with open(path, "rb") as handle:
        for line, raw in enumerate(handle, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as err:
                bad = raw[err.start : err.start + 1]
                return DataError(
                    f"{path}, line {line}, column {err.start + 1}: byte {bad!r} "
                    "is not valid UTF-8; save the file as UTF-8"
                )
    return DataError(f"{path}: cannot be decoded as {encoding}")


def _sniff(path, spec, header):
    """Find field count, columns and header line from the first lines."""
    # first non-blank records
    sample = []
    with closing(_records(path, spec)) as records:
        for line, fields in records:
            if any(fields):
                sample.append((line, fields))
            if len(sample) == _SNIFF_LINES:
                break
    if not sample:
        raise DataError(f"{path}: no ratings, the file is empty or blank")

    # a delimiter that splits nothing is the wrong one
    n_fields = Counter(len(fields) for _, fields in sample).most_common(1)[0][0]
    if n_fields < 3:
        raise _delimiter_error(path, spec, *sample[0])

    # columns by name or by position
    if spec.names is None:
        layout = _positional_layout(spec, sample, header, n_fields)
    else:
        layout = _named_layout(path, spec, sample, header, n_fields)
    if all(line == layout.header_line for line, _ in sample):
        raise DataError(
            f"{path}: no ratings, only a header on line {layout.header_line}"
        )
    return layout


def _delimiter_error(path, spec, line, fields):
    """Return a DataError for a line the delimiter does not split."""
    # which delimiter would split the line
    text = spec.sep.join(fields)
    found = [
        d
        for d in _DELIMITER_NAMES
        if d != spec.sep and sum(1 for f in text.split(d) if f.strip()) >= 3
    ]
    message = (
        f"{path}, line {line}: splitting on {spec.sep!r} gives {len(fields)} "
        f"field(s), expected at least 3 (user, item, rating) for format "
        f"{spec.format!r}"
    )

    # suggest it when the line shows it
    if found:
        hint = {"\t": "'ml-100k'", "::": "'ml-1m'", ",": "'ml-latest' or 'csv'"}
        formats = f" (format {hint[found[0]]})" if found[0] in hint else ""
        message += (
            f"; the line contains {_DELIMITER_NAMES[found[0]]}: read it with "
            f"sep={found[0]!r}{formats}"
        )
    else:
        message += "; check sep and format"
    return DataError(message)


def _positional_layout(spec, sample, header, n_fields):
    """Layout of a format without names: user, item, rating[, timestamp]."""
    # skip a detected or declared header line
    first_line, first = sample[0]
    if header is None:
        header = (
            len(sample) > 1
            and len(first) >= 3
            and not _is_number(first[2])
            and len(sample[1][1]) >= 3
            and _is_number(sample[1][1][2])
        )
        if header:
            logger.info("skipping header line %d: %r", first_line, first)

    # the MovieLens formats have 3 or 4 fields
    data_counts = Counter(len(f) for n, f in sample if not (header and n == first_line))
    if data_counts:
        n_fields = data_counts.most_common(1)[0][0]
    if spec.format != "csv":
        n_fields = n_fields if n_fields in (3, 4) else 4
    n_used = min(n_fields, 4)
    columns = {role: k for k, role in enumerate(_ROLES[:n_used])}
    labels = {role: role for role in columns}
    return _Layout(n_fields, columns, labels, first_line if header else None)


def _named_layout(path, spec, sample, header, n_fields):
    """Layout of a format whose header names the columns."""
    # decide whether the first line is a header
    first_line, first = sample[0]
    required = spec.names[:3]
    if header is None:
        looks_like_header = len(first) >= 3 and not _is_number(first[2])
        header = all(name in first for name in required) or looks_like_header
    if not header:
        return _positional_layout(spec, sample, False, n_fields)

    # find every required name in it
    for param, name in zip(("user_col", "item_col", "rating_col"), required):
        if name not in first:
            raise _missing_column_error(path, spec, first_line, first, param, name)
    columns = {
        role: first.index(name)
        for role, name in zip(_ROLES, spec.names)
        if name in first
    }
    labels = {role: spec.names[k] for k, role in enumerate(_ROLES) if role in columns}
    return _Layout(len(first), columns, labels, first_line)


def _missing_column_error(path, spec, line, first, param, name):
    """Return a DataError for a header that lacks a named column."""
    message = f"{path}, line {line}: no column {name!r} in the header {first}"
    if all(_is_number(field) for field in first):
        return DataError(
            f"{message}; line {line} looks like data, not a header: pass "
            "header=False to read the columns by position (user, item, "
            "rating, timestamp)"
        )
    if spec.format == "csv":
        return DataError(f"{message}; pass {param}=NAME with NAME one of {first}")
    return DataError(
        f"{message}; format {spec.format!r} expects the header "
        f"{','.join(spec.names)}; use format='csv' with {param}=... for others"
    )


def _is_number(text):
    """Return True if ``text`` is a plain decimal number."""
    return _NUMBER.fullmatch(text) is not None


def _read_fields(path, spec, layout):
    """Read every field as text (NaN if empty); None if a line is too long."""
    # one-character delimiters go straight to the C parser
    options = {
        "header": None,
        "names": list(range(layout.n_fields)),
        "index_col": False,
        "dtype": object,
        "keep_default_na": False,
        "na_values": [""],
        "skip_blank_lines": False,
        "quoting": spec.quoting,
        "engine": "c",
    }
    source, sep, encoding = path, spec.sep, spec.encoding

    # NOTE: the C parser takes one-character delimiters only; "::" becomes
    # the unit separator, which is four times faster than the Python parser.
    if len(spec.sep) > 1:
        text = path.read_text(encoding=spec.encoding)
        if _UNIT_SEP in text:
            raise DataError(f"{path}: contains the control character \\x1f")
        source, sep, encoding = (
            StringIO(text.replace(spec.sep, _UNIT_SEP)),
            _UNIT_SEP,
            None,
        )

    try:
        return pd.read_csv(source, sep=sep, encoding=encoding, **options)
    except pd.errors.ParserError:
        return None
    except UnicodeDecodeError as err:
        raise _decode_error(path, spec.encoding) from err


def _build_table(path, spec, layout, fields):
    """Check the text fields and convert them; return ``(table, lines)``."""
    # a too-long line stopped the fast reader: list every bad line
    if fields is None:
        _raise_problems(path, spec, layout, must_find=True)

    # drop blank lines and the header, keeping line numbers
    lines = np.arange(1, len(fields) + 1)  # (n_lines,)
    missing = fields.isna().to_numpy()  # (n_lines, n_fields)
    keep = ~missing.all(axis=1)
    if layout.header_line is not None:
        keep &= lines != layout.header_line
    fields, lines, missing = fields[keep], lines[keep], missing[keep]
    text = {role: _Text(fields[k]) for role, k in layout.columns.items()}

    # anything suspicious sends every line through the careful check
    if _suspicious(spec, layout, text, missing).any():
        _raise_problems(path, spec, layout, must_find=False)

    # convert each column
    table = pd.DataFrame(
        {
            "user": _as_ids(text["user"]),
            "item": _as_ids(text["item"]),
            "rating": _as_ratings(text["rating"]),
        }
    )
    if "timestamp" in text:
        table["timestamp"] = _as_timestamps(text["timestamp"], spec.strict_time)
    return table, lines


def _suspicious(spec, layout, text, missing):
    """Flag rows with an empty or missing field, or a malformed value."""
    # empty or missing used fields, or a missing last field (short line)
    used = sorted(set(layout.columns.values()) | {layout.n_fields - 1})
    flags = missing[:, used].any(axis=1)  # (n_rows,)

    # ratings that are not decimal numbers
    rating = text["rating"]
    plain = rating.plain_numbers()  # (n_rows,)
    rough = [v if isinstance(v, str) else "" for v in rating.values[~plain]]
    flags[~plain] |= np.array([not _is_number(v) for v in rough], dtype=bool)

    # timestamps that are not whole seconds
    if spec.strict_time and "timestamp" in text:
        flags |= ~text["timestamp"].digits(18)[0]
    return flags


def _raise_problems(path, spec, layout, must_find):
    """Check every line in Python and raise one DataError listing them all."""
    problems = []
    for line, fields in _records(path, spec):
        if line == layout.header_line or not any(fields):
            continue
        problems.extend(_line_problems(spec, layout, line, fields))
    if problems:
        raise _problems_error(path, spec, problems)
    if must_find:
        raise DataError(f"{path}: could not be parsed as format {spec.format!r}")


def _line_problems(spec, layout, line, fields):
    """Return the problems of one line as message strings."""
    # the field count comes first: a wrong one shifts every column
    if len(fields) != layout.n_fields:
        names = ", ".join(
            layout.labels[r] for r in sorted(layout.columns, key=layout.columns.get)
        )
        return [
            f"line {line}: {len(fields)} field(s) splitting on {spec.sep!r}, "
            f"expected {layout.n_fields} ({names})"
        ]

    # then each used field
    problems = []
    for role, k in layout.columns.items():
        value = fields[k]
        where = f"line {line}, column {k + 1} ({layout.labels[role]})"
        if role in ("user", "item") and value == "":
            problems.append(f"{where}: empty id")
        elif role == "rating" and not _is_number(value):
            problems.append(
                f"{where}: got {value!r}, expected a decimal number like 4 or 3.5"
            )
        elif role == "timestamp" and spec.strict_time and not _SECONDS.fullmatch(value):
            problems.append(
                f"{where}: got {value!r}, expected whole seconds since 1970"
            )
    return problems


def _problems_error(path, spec, problems):
    """Return one DataError listing up to ``_MAX_LISTED`` problems."""
    shown = "\n".join(f"  {p}" for p in problems[:_MAX_LISTED])
    more = len(problems) - _MAX_LISTED
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return DataError(
        f"{path}: {len(problems)} problem(s) reading format {spec.format!r} "
        f"(delimiter {spec.sep!r}):\n{shown}{tail}"
    )


class _Text:
    """Text values of one column with their ASCII codes, for vector checks.

    Parameters
    ----------
    text : pandas.Series of object of shape (n,)
        Values as read (str, or NaN when empty).

    Attributes
    ----------
    values : ndarray of object of shape (n,)
        The values.
    codes : ndarray of uint8 of shape (n, width) or None
        Characters of each value then zeros; None if a value is not ASCII.
    """

    def __init__(self, text):
        self.values = text.to_numpy(dtype=object)  # (n,)
        try:
            packed = np.asarray(self.values, dtype="S")  # (n,)
        except UnicodeEncodeError:
            self.codes = None
            return
        width = max(packed.dtype.itemsize, 1)
        codes = packed.view(np.uint8)
        self.codes = codes.reshape(len(packed), width)  # (n, width)

    def digits(self, max_digits, canonical=False):
        """Flag values of 1 to ``max_digits`` digits.

        Parameters
        ----------
        max_digits : int
            Longest allowed value.
        canonical : bool, default=False
            Also refuse a leading zero, except in ``"0"`` itself.

        Returns
        -------
        ok : ndarray of bool of shape (n,)
            True where the value qualifies.
        length : ndarray of int of shape (n,)
            Number of digits of each value.
        """
        # every character a digit, digits first, then only padding
        codes = self.codes
        if codes is None:
            n = len(self.values)
            return np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
        digit = (codes >= ord("0")) & (codes <= ord("9"))  # (n, width)
        length = digit.sum(axis=1)  # (n,)
        ok = (digit | (codes == 0)).all(axis=1)
        ok &= (digit.argmin(axis=1) >= length) | digit.all(axis=1)

        # 1..max_digits long, no leading zero when canonical
        ok &= (length >= 1) & (length <= max_digits)
        if canonical:
            ok &= (codes[:, 0] != ord("0")) | (length == 1)
        return ok, length

    def plain_numbers(self):
        """Flag values of digits with at most one dot, the usual rating form.

        Returns
        -------
        ndarray of bool of shape (n,)
            True where the value surely matches ``_NUMBER``; the others
            still need the regex.
        """
        # digits and one dot at most, first, then only padding
        codes = self.codes
        if codes is None:
            return np.zeros(len(self.values), dtype=bool)
        digit = (codes >= ord("0")) & (codes <= ord("9"))  # (n, width)
        dot = codes == ord(".")  # (n, width)
        body = digit | dot  # (n, width)
        ok = (body | (codes == 0)).all(axis=1)
        ok &= (body.argmin(axis=1) >= body.sum(axis=1)) | body.all(axis=1)
        return ok & digit.any(axis=1) & (dot.sum(axis=1) <= 1)


def _as_ids(text):
    """Return ids as int64 when all are canonical integers, else as text."""
    # canonical decimal integers of at most 19 digits
    canonical, length = text.digits(19, canonical=True)
    if canonical.all():
        # NOTE: 19 digits may still exceed int64; compare those as text
        longest = text.values[length == len(_INT64_MAX)].astype(str)
        if not (longest > _INT64_MAX).any():
            try:
                return text.values.astype(np.int64)
            except ValueError:
                # NOTE: a trailing NUL reads as padding in the digit check;
                # such ids are not plain integers, so they stay text
                pass
    return pd.Series(text.values, dtype=str).array


def _as_ratings(text):
    """Return checked rating text as float64, spaces around allowed."""
    values = text.values.copy()  # (n,)
    rough = ~text.plain_numbers()  # (n,)
    values[rough] = [value.strip() for value in values[rough]]
    return values.astype(np.float64)  # (n,)


def _as_timestamps(text, strict):
    """Return timestamps as int64 (strict formats are checked), else text."""
    if strict or all(_SIGNED_INT.fullmatch(v) for v in text.values):
        return text.values.astype(np.int64)
    return pd.Series(text.values, dtype=str).array


def _resolve_duplicates(path, table, lines, policy):
    """Apply the duplicates policy; return a table with one row per pair."""
    # find repeated pairs
    pair = ["user", "item"]
    repeated = table.duplicated(pair, keep=False).to_numpy()
    if not repeated.any():
        return table
    if policy == "error":
        raise _duplicates_error(path, table[repeated], lines[repeated])

    # average the ratings and take the latest timestamp of each pair
    if policy == "mean":
        groups = table.groupby(pair, sort=False)
        table = table.assign(rating=groups["rating"].transform("mean"))
        if "timestamp" in table:
            table["timestamp"] = groups["timestamp"].transform("max")

    # keep one row per pair
    keep = "last" if policy == "last" else "first"
    n_pairs = int(table[repeated].duplicated(pair).sum())
    table = table[~table.duplicated(pair, keep=keep)]
    logger.info("%s: merged %d repeated rows with duplicates=%r", path, n_pairs, policy)
    return table.reset_index(drop=True)


def _duplicates_error(path, repeated, lines):
    """Return a DataError listing each repeated pair with its line numbers."""
    listed = repeated.assign(line=lines).groupby(["user", "item"], sort=False)["line"]
    entries = [
        f"user {user}, item {item}: lines {', '.join(map(str, group))}"
        for (user, item), group in listed
    ]
    shown = "\n".join(f"  {e}" for e in entries[:_MAX_LISTED])
    more = len(entries) - _MAX_LISTED
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return DataError(
        f"{path}: {len(entries)} (user, item) pair(s) rated on several lines; "
        f"pass duplicates='last', 'first' or 'mean' to keep one:\n{shown}{tail}"
    )


def load_dataset(name, data_dir=None, download=False, duplicates="error"):
    """Read the ratings of a named dataset.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    data_dir : str or PathLike or None, default=None
        Data home; see :func:`data_home`.
    download : bool, default=False
        Fetch the dataset when it is missing.
    duplicates : {"error", "last", "first", "mean"}, default="error"
        Policy for repeated (user, item) pairs; see :func:`read_ratings`.

    Returns
    -------
    pandas.DataFrame of shape (n_ratings, 4)
        ``user``, ``item``, ``rating``, ``timestamp``, in file order.

    Raises
    ------
    DataError
        If the dataset is missing, its file is malformed, or it holds another
        number of ratings than the published dataset.
    """
    info = _dataset_info(name)
    folder = dataset_path(name, data_dir, download=download)
    path = folder / info["ratings"]
    ratings = read_ratings(path, info["format"], duplicates=duplicates)
    # NOTE: the sha256 is checked on download; a file cut short or edited
    # since then still parses, so its count of ratings is checked on load
    expected = info.get("n_ratings")
    if expected is not None and len(ratings) != expected:
        raise DataError(
            f"{path}: {len(ratings):,} ratings where {name} has {expected:,}; "
            f"the file is damaged or was changed: delete {folder} and run "
            f"`npmf download {name}`, or train on the file itself with "
            f"--ratings {path}"
        )
    return ratings


# ------------------------------------------------------------------ titles


def read_titles(name_or_path, data_dir=None):
    """Read movie titles.

    Parameters
    ----------
    name_or_path : str or PathLike
        A key of :data:`DATASETS`, or a titles file named ``u.item``
        (ml-100k: ``|``-separated, latin-1), ``movies.dat`` (ml-1m:
        ``::``-separated, latin-1) or ``movies.csv`` (ml-latest: quoted CSV
        with header, UTF-8), or a folder holding one of them.
    data_dir : str or PathLike or None, default=None
        Data home, for a dataset name; see :func:`data_home`.

    Returns
    -------
    dict
        Raw item id to title. Ids follow the rule of :func:`read_ratings`
        (int when all are canonical integers), so they match its ``item``.

    Raises
    ------
    DataError
        If the file is missing, of an unknown kind, or has a malformed line.
    """
    # locate the file and its kind
    path = _titles_file(name_or_path, data_dir)
    sep, encoding, header = {
        "u.item": ("|", "latin-1", False),
        "movies.dat": ("::", "latin-1", False),
        "movies.csv": (",", "utf-8-sig", True),
    }[path.name]
    quoting = csv.QUOTE_MINIMAL if header else csv.QUOTE_NONE
    spec = _Spec("titles", sep, quoting, encoding, None, False)

    # collect id and title of each line
    ids, titles, problems = [], [], []
    for line, fields in _records(path, spec):
        if not any(fields) or (header and line == 1):
            continue
        if len(fields) < 2 or fields[0] == "":
            problems.append(f"line {line}: expected an id and a title split on {sep!r}")
            continue
        ids.append(fields[0])
        titles.append(fields[1])
    if problems:
        raise _problems_error(path, spec, problems)
    if not ids:
        raise DataError(f"{path}: no titles, the file is empty")
    keys = _as_ids(_Text(pd.Series(ids, dtype=object))).tolist()
    return dict(zip(keys, titles))


def _titles_file(name_or_path, data_dir):
    """Return the titles file of a dataset name, folder or file."""
    # a dataset name
    if isinstance(name_or_path, str) and name_or_path in DATASETS:
        info = DATASETS[name_or_path]
        return _existing_file(
            dataset_path(name_or_path, data_dir) / info["titles"], "titles file"
        )

    # a folder holding a known titles file, or the file itself
    path = Path(name_or_path)
    known = ("u.item", "movies.dat", "movies.csv")
    if path.is_dir():
        path = next((path / n for n in known if (path / n).is_file()), path / known[0])
    if path.name not in known:
        raise DataError(
            f"unknown titles file {path}: expected a dataset name "
            f"({', '.join(DATASETS)}) or a file named one of {known}"
        )
    return _existing_file(path, "titles file")


# ------------------------------------------------------------------ splits


def tutorial_split(ratings):
    """Split 80/20 exactly as the Keras MovieLens tutorial does.

    Parameters
    ----------
    ratings : pandas.DataFrame of shape (n_ratings, >=3)
        Ratings in file order, one row per (user, item) pair.

    Returns
    -------
    train : pandas.DataFrame of shape (n_train, >=3)
        Shuffled rows; index labels are those of ``ratings``.
    test : pandas.DataFrame of shape (n_test, >=3)
        The other rows, shuffled.

    Raises
    ------
    DataError
        If a pair repeats or a side would be empty.

    Notes
    -----
    ``sklearn.model_selection.train_test_split(ratings, test_size=0.2,
    shuffle=True, random_state=2021)``: ``n_test = ceil(0.2 n)``,
    ``n_train = n - n_test``. On ml-100k the test set starts with (user
    468, item 51, 3), (92, 780, 3), (555, 489, 5).
    """
    from sklearn.model_selection import train_test_split

    # refuse an empty side before sklearn would
    n = _check_ratings_table(ratings)
    n_test = math.ceil(0.2 * n)
    n_train = n - n_test
    _check_sides(n, n_train, n_test, "test_size=0.2 (tutorial split)")

    # the tutorial's own call
    train, test = train_test_split(
        ratings, test_size=0.2, shuffle=True, random_state=2021
    )
    return train, test


def canonical_split(fold, data_dir=None):
    """Read one of the predefined ml-100k splits.

    Parameters
    ----------
    fold : {"u1", "u2", "u3", "u4", "u5", "ua", "ub"}
        ``u1``-``u5``: 5-fold 80/20 splits; ``ua``/``ub``: 10 test ratings
        per user.
    data_dir : str or PathLike or None, default=None
        Data home holding ``ml-100k/``; see :func:`data_home`.

    Returns
    -------
    train : pandas.DataFrame of shape (n_train, 4)
        ``ml-100k/<fold>.base``.
    test : pandas.DataFrame of shape (n_test, 4)
        ``ml-100k/<fold>.test``.

    Raises
    ------
    DataError
        If ``fold`` is unknown, or ml-100k is missing or malformed.
    """
    _check_choice("fold", fold, CANONICAL_FOLDS)
    folder = dataset_path("ml-100k", data_dir)
    train = read_ratings(folder / f"{fold}.base", "ml-100k")
    test = read_ratings(folder / f"{fold}.test", "ml-100k")
    return train, test


def random_split(ratings, test_size=0.2, seed=0):
    """Split ratings at random into train and test, reproducibly.

    Parameters
    ----------
    ratings : pandas.DataFrame of shape (n_ratings, >=3)
        Ratings, one row per (user, item) pair.
    test_size : float, default=0.2
        Fraction of ratings in the test set, in (0, 1).
    seed : int, default=0
        Seed of ``np.random.default_rng``.

    Returns
    -------
    train : pandas.DataFrame of shape (n_ratings - n_test, >=3)
        Rows in their original order; index labels are those of ``ratings``.
    test : pandas.DataFrame of shape (n_test, >=3)
        ``n_test = floor(test_size * n_ratings)`` rows, in original order.

    Raises
    ------
    DataError
        If ``test_size`` is out of range, a pair repeats, or a side would be
        empty (e.g. 3 ratings with ``test_size=0.2`` give 0 test ratings).
    """
    # check the arguments
    n = _check_ratings_table(ratings)
    if not isinstance(test_size, (float, int)) or not 0 < test_size < 1:
        raise DataError(f"test_size must be a number in (0, 1), got {test_size!r}")
    n_test = math.floor(test_size * n)
    _check_sides(n, n - n_test, n_test, f"test_size={test_size}")

    # draw the test rows
    rng = np.random.default_rng(seed)
    is_test = np.zeros(n, dtype=bool)  # (n_ratings,)
    is_test[rng.permutation(n)[:n_test]] = True
    return ratings[~is_test], ratings[is_test]


def _check_ratings_table(ratings):
    """Check a ratings table before splitting it; return its length."""
    # a table with the three columns
    if not isinstance(ratings, pd.DataFrame):
        raise TypeError(
            f"ratings must be a pandas DataFrame, got {type(ratings).__name__}"
        )
    missing = [c for c in ("user", "item", "rating") if c not in ratings]
    if missing:
        raise DataError(
            f"ratings lacks column(s) {missing}; has {list(ratings.columns)}"
        )

    # NOTE: a pair on both sides would leak its rating into the test score
    repeated = int(ratings.duplicated(["user", "item"]).sum())
    if repeated:
        raise DataError(
            f"ratings has {repeated} repeated (user, item) row(s); read it with "
            "duplicates='last', 'first' or 'mean' before splitting"
        )
    return len(ratings)


def _check_sides(n, n_train, n_test, how):
    """Raise DataError if a split would leave a side empty."""
    if n_train < 1 or n_test < 1:
        raise DataError(
            f"cannot split {n} rating(s) with {how}: it gives {n_train} train "
            f"and {n_test} test rating(s); both sides need at least one"
        )
