"""The regression check of report.py: a figure that falls back by more than the tolerance fails it."""
import json
import pathlib
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import report  # noqa: E402

KIND = "2 x Test CPU"


def baseline(tmp):
    path = pathlib.Path(tmp) / "baseline.json"
    path.write_text(json.dumps({
        "tolerance": 0.2,
        "kinds": {KIND: {"figures": [{
            "name": "fan-out",
            "args": ["broadcast", "public", "--subscribers", "10"],
            "server": "ferrocable",
            "metrics": {
                "delivered_per_second": {"value": 200000, "better": "higher"},
                "server_cpu_us_per_delivery": {"value": 5.0, "better": "lower"},
                "latency.p95_ms": {"value": 100.0, "better": "lower"},
                "missing": {"value": 0, "better": "lower"},
            },
        }]}},
    }))
    return path


def rounds(tmp, *results):
    root = pathlib.Path(tmp) / "rounds"
    for n, (rate, cpu, p95, missing) in enumerate(results, 1):
        d = root / f"round-{n}"
        d.mkdir(parents=True)
        (d / "ferrocable.json").write_text(json.dumps({
            "scenario": "broadcast", "delivered_per_second": rate, "server_cpu_us_per_delivery": cpu,
            "latency": {"p95_ms": p95}, "missing": missing}))
        (d / "anycable-go.json").write_text(json.dumps({"scenario": "broadcast", "delivered_per_second": 1}))
    return root


class Check(unittest.TestCase):
    def check(self, *results, kind=KIND):
        tmp = self.enterContext(tempfile.TemporaryDirectory())
        return report.check(baseline(tmp), "fan-out", rounds(tmp, *results), kind=kind)

    def test_within_tolerance_holds_and_uses_the_median_of_the_rounds(self):
        # One bad round out of three does not move the median.
        held, text = self.check((190000, 5.5, 110.0, 0), (50000, 20.0, 900.0, 0), (170000, 5.9, 119.0, 0))
        self.assertTrue(held, text)
        self.assertIn("median of 3", text)
        self.assertIn("| delivered_per_second (higher is better) | 200,000 | 170,000 | -15.0% | ok |", text)

    def test_each_kind_of_fall_back_fails(self):
        for what, result, expected in [
            ("throughput drop", (150000, 5.0, 100.0, 0), "-25.0% | **regressed**"),
            ("cost rise", (200000, 6.5, 100.0, 0), "+30.0% | **regressed**"),
            ("a zero baseline must stay zero", (200000, 5.0, 100.0, 3), "3 (was 0)"),
        ]:
            held, text = self.check(result)
            self.assertFalse(held, what)
            self.assertIn(expected, text, what)

    def test_another_machine_kind_or_a_missing_metric_is_not_a_pass(self):
        held, text = self.check((200000, 5.0, 100.0, 0), kind="64 x Other CPU")
        self.assertFalse(held)
        self.assertIn("no baseline", text)
        with tempfile.TemporaryDirectory() as tmp:
            d = rounds(tmp, (200000, 5.0, 100.0, 0))
            (d / "round-1" / "ferrocable.json").write_text(json.dumps({"delivered_per_second": 200000}))
            held, text = report.check(baseline(tmp), "fan-out", d, kind=KIND)
            self.assertFalse(held)
            self.assertIn("not measured", text)

    def test_record_writes_the_medians_for_the_machine_kind(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = baseline(tmp)
            d = rounds(tmp, (210000, 4.0, 90.0, 0), (230000, 4.5, 80.0, 0), (220000, 4.2, 85.0, 0))
            report.record(path, "fan-out", d, kind="4 x New CPU")
            saved = json.loads(path.read_text())["kinds"]
            self.assertEqual(saved["4 x New CPU"]["figures"][0]["metrics"]["delivered_per_second"]["value"], 220000)
            self.assertEqual(saved[KIND]["figures"][0]["metrics"]["delivered_per_second"]["value"], 200000)
            held, _ = report.check(path, "fan-out", d, kind="4 x New CPU")
            self.assertTrue(held)

    def test_the_command_exits_1_on_a_regression(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = baseline(tmp)
            kind = report.machine_kind()
            data = json.loads(path.read_text())
            data["kinds"] = {kind: data["kinds"][KIND]}
            path.write_text(json.dumps(data))
            script = pathlib.Path(report.__file__)
            bad = rounds(tmp, (100000, 5.0, 100.0, 0))
            run = subprocess.run([sys.executable, script, "check", path, "fan-out", bad], capture_output=True, text=True)
            self.assertEqual(run.returncode, 1, run.stdout)
            listed = subprocess.run([sys.executable, script, "figures", path], capture_output=True, text=True)
            self.assertEqual(listed.stdout, "fan-out\tbroadcast public --subscribers 10\n")


class Kind(unittest.TestCase):
    def test_kind_names_the_cores_and_the_cpu_model(self):
        with tempfile.TemporaryDirectory() as tmp:
            info = pathlib.Path(tmp) / "cpuinfo"
            info.write_text("processor\t: 0\nmodel name\t: Intel(R)  Xeon(R) Processor\n")
            self.assertEqual(report.machine_kind(info, cores=2), "2 x Intel(R) Xeon(R) Processor")


if __name__ == "__main__":
    unittest.main()
