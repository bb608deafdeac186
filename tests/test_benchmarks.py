"""The benchmark runner's bookkeeping: pooled rounds and the target lines.

Hand-worked numbers; no timing is measured here.
"""

import pytest

from benchmarks import run


def _round(n, times, gflops):
    return {
        "impl": "npmf",
        "model": "deep-relu",
        "dataset": "ml-100k",
        "epochs": len(times),
        "engine": "auto",
        "threads": 2,
        "optimizer": "sgd",
        "k": 200,
        "n_train": 1000,
        "times": times,
        "cpu_times": [2 * t for t in times],
        "gflops_per_epoch": gflops,
        "median_s_per_epoch": sorted(times[1:])[len(times[1:]) // 2],
        "peak_rss_mb": 100.0 + n,
        "round": n,
    }


def test_pool_drops_each_warmup_and_keeps_rates_aligned():
    a = _round(1, [9.0, 2.0, 4.0], [1.0, 10.0, 20.0])
    b = _round(2, [9.0, 3.0, 5.0], [1.0, 30.0, 40.0])
    (pooled,) = run.pool_rounds([a, b])
    assert pooled["times"] == [2.0, 4.0, 3.0, 5.0]
    assert pooled["gflops_per_epoch"] == [10.0, 20.0, 30.0, 40.0]
    assert pooled["median_s_per_epoch"] == pytest.approx(3.5)
    assert pooled["median_cpu_s_per_epoch"] == pytest.approx(7.0)
    assert pooled["round_medians"] == [4.0, 5.0]
    assert pooled["peak_rss_mb"] == 102.0
    assert pooled["warmup"] == 0 and pooled["rounds"] == 2


def test_gemm_bound_ratio_of_pooled_rounds():
    """k 200: widths 402, 2048, 256, 1 make 1,347,840 MACs a sample.

    Six FLOPs per MAC over 1000 samples: G = 8.08704 GFLOP an epoch. Epochs
    of 2 s at G GFLOP/s and 1 s at 2G GFLOP/s are both 2.0x the bound, 1 s
    at G GFLOP/s is 1.0x; the median ratio is 2.0.
    """
    G = 6 * (402 * 2048 + 2048 * 256 + 256) * 1000 / 1e9
    assert G == pytest.approx(8.08704)
    a = _round(1, [9.0, 2.0, 2.0], [1.0, G, G])
    b = _round(2, [9.0, 1.0, 1.0], [1.0, 2 * G, G])
    (pooled,) = run.pool_rounds([a, b])
    lines = run._targets([pooled], {})
    assert pooled["gemm_bound_ratio"] == pytest.approx(2.0)
    (line,) = [x for x in lines if "GFLOP/epoch" in x]
    assert "8 GFLOP/epoch" in line and "2.00x that (target <= 1.3x): NOT met" in line


def test_speedups_of_fewer_threads_are_for_information():
    rows = []
    for threads, seconds in ((2, 2.0), (1, 4.0)):
        rows.append(
            {
                "impl": "npmf",
                "model": "deep-relu",
                "engine": "auto",
                "threads": threads,
                "speedup_vs_keras": 6.0 / seconds,
                "k": 200,
                "times": [],
            }
        )
    lines = run._targets(rows, {})
    assert any(
        x.startswith("- deep-relu (npmf 2 thread(s)): 3.0x") and ": met;" in x
        for x in lines
    )
    (one,) = [x for x in lines if x.startswith("- deep-relu (npmf 1 thread(s)): 1.5x")]
    assert "for information only, Keras had 2 threads" in one


def test_rounds_note_only_when_rounds_were_run():
    """A quick run has no rounds, so no paragraph about them."""
    assert run._rounds_note([]) == []
    a = _round(1, [9.0, 2.0, 4.0], [1.0, 10.0, 20.0])
    b = _round(2, [9.0, 3.0, 5.0], [1.0, 30.0, 40.0])
    (note, blank) = run._rounds_note(run.pool_rounds([a, b]))
    assert "deep-relu npmf 4, 5 s" in note and blank == ""


def test_only_names_are_the_workers(capsys):
    """``--only`` lists exactly the implementations the worker can run."""
    from benchmarks import worker

    with pytest.raises(SystemExit):
        run.main(["--only", "bogus"])
    expected = "expected a comma-separated subset of " + ", ".join(worker.RUNNERS)
    assert expected in capsys.readouterr().err
    assert set(worker.RUNNERS) == {
        "npmf",
        "keras",
        "surprise",
        "cornac",
        "synthetic",
        "gemm",
    }


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--only", "bogus"], "--only: unknown implementation(s) 'bogus'"),
        (["--only", "npmf,kerass"], "--only: unknown implementation(s) 'kerass'"),
        (["--threads", "0"], "--threads: expected at least 1 thread, got 0"),
        (["--threads", "abc"], "--threads: expected a whole number of threads"),
    ],
)
def test_runner_refuses_bad_options_before_running(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        run.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_runner_refuses_out_behind_a_file(tmp_path, capsys):
    """A file where the results directory should go stops the run up front."""
    path = tmp_path / "results"
    path.write_text("not a directory")
    with pytest.raises(SystemExit) as exc:
        run.main(["--quick", "--out", str(path)])
    assert exc.value.code == 2
    assert f"--out {path} is a file; expected a directory" in capsys.readouterr().err
    assert path.read_text() == "not a directory"


def test_parts_refuses_bad_options_before_measuring(tmp_path, capsys):
    from benchmarks import parts

    for argv, message in [
        (["--steps", "0"], "--steps must be at least 1, got 0"),
        (["--repeats", "-2"], "--repeats must be at least 1, got -2"),
        (["--out", str(tmp_path)], f"--out {tmp_path} is a directory"),
    ]:
        with pytest.raises(SystemExit) as exc:
            parts.main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_error_line_names_the_error_not_the_last_native_frame():
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "worker.py", line 3, in <module>\n'
        "ValueError: intra_op threads must be positive\n"
        "*** SIGABRT received\n"
        "  @ 0x7fd617da6ce3 cfunction_call\n"
    )
    assert run._error_line(stderr, -6) == (
        "exit -6: ValueError: intra_op threads must be positive"
    )
    assert run._error_line("", 1) == "exit 1: no output"
    missing = "ModuleNotFoundError: No module named 'surprise'\n"
    assert run._error_line(missing, 1) == "not installed: surprise"


def test_quick_run_says_its_verdicts_are_a_smoke_test():
    lines = run._targets([], {}, quick=True)
    assert any(x.startswith("Quick run (`--quick`): one timed epoch") for x in lines)
    assert not any(x.startswith("Quick run") for x in run._targets([], {}))
