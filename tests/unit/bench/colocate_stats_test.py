#!/usr/bin/env python3
"""scripts/bench/colocate.py's statistics and report.py's README table, on synthetic runs whose
every figure is known: ratios to the same run's RT alone (the lower p99 of its two runs) and to
plain MPS, deadline misses, BE throughput within the measured window, and the bit-for-bit check of
BE's recorded values."""
import json
import sys
import tempfile
import types
import unittest
from pathlib import Path

ROOT = Path(sys.argv.pop(1)).resolve()
sys.path.insert(0, str(ROOT / "scripts" / "bench"))
import colocate  # noqa: E402
import report  # noqa: E402

ARGS = types.SimpleNamespace(rt_delay_s=1.0, duration_s=10.0)
RT_SPEC = {"role": "rt", "model": "resnet50", "batch": 1, "rate": 100.0, "arrival": "fixed", "task": "infer"}
BE_SPEC = {"role": "be", "model": "resnet50", "batch": 64, "rate": 0, "arrival": "fixed", "task": "train"}


def rt(latencies_ms):
    n = len(latencies_ms)
    return {"spec": RT_SPEC, "arrival_s": [1 + i * 10 / n for i in range(n)],
            "latency_s": [x / 1000 for x in latencies_ms]}


def be(steps_per_s, values):
    # Steps every 1/rate s from 0 to 11.5 s: the window [1, 11] holds 10 s of them.
    done = [i / steps_per_s for i in range(1, int(11.5 * steps_per_s) + 1)]
    return {"spec": BE_SPEC, "done_s": done, "values": values}


def run(*clients):
    return {"clients": list(clients), "errors": []}


class Statistics(unittest.TestCase):
    def setUp(self):
        losses = [float(i) for i in range(400)]
        changed = list(losses)
        changed[7] = 7.5
        # 100 requests each: p99 (nearest rank) is the 99th smallest.
        self.results = {
            "rt-alone": run(rt([2.0] * 98 + [4.0, 9.0])),    # p99 4.0
            "rt-alone-2": run(rt([2.0] * 98 + [3.0, 9.0])),  # p99 3.0: the baseline
            "be-alone": run(be(30, losses)),
            "mps": run(rt([2.0] * 90 + [6.0] * 10), be(20, losses)),   # p99 6.0
            "sluice-mps": run(rt([2.0] * 98 + [3.0, 3.3]), be(18, changed)),
        }
        colocate.summarize(ARGS, self.results)

    def summary(self, name):
        return self.results[name]["summary"]

    def test_rt_ratios_use_the_lower_of_the_two_alone_runs(self):
        self.assertAlmostEqual(self.summary("mps")["rt_p99_ratio"], 2.0)
        self.assertAlmostEqual(self.summary("sluice-mps")["rt_p99_ratio"], 1.0)
        self.assertAlmostEqual(self.summary("rt-alone")["rt_p99_ratio"], 4.0 / 3.0)

    def test_deadline_is_one_and_a_half_times_the_alone_p99(self):
        self.assertAlmostEqual(self.summary("mps")["rt"][0]["deadline_ms"], 4.5)
        self.assertAlmostEqual(self.summary("mps")["deadline_miss_rate"], 0.10)
        self.assertAlmostEqual(self.summary("sluice-mps")["deadline_miss_rate"], 0.0)

    def test_be_throughput_counts_the_measured_window_only(self):
        # Steps at k/30 s for k = 30..330 lie in [1, 11]: 301 steps over 10 s.
        self.assertAlmostEqual(self.summary("be-alone")["be_steps_per_s"], 30.1)
        self.assertAlmostEqual(self.summary("sluice-mps")["be_vs_mps"], 181 / 201)
        self.assertAlmostEqual(self.summary("mps")["be_ratio_alone"], 201 / 301)

    def test_be_values_are_compared_bit_for_bit(self):
        self.assertTrue(self.summary("mps")["be"][0]["identical_to_alone"]["ok"])
        check = self.summary("sluice-mps")["be"][0]["identical_to_alone"]
        self.assertFalse(check["ok"])
        self.assertEqual(check["compared_steps"], 400)
        self.assertEqual(check["identical_steps"], 399)

    def test_markdown_and_readme_table_come_from_the_same_figures(self):
        doc = {"workload": "train", "spec": colocate.WORKLOADS["train"], "order": list(self.results),
               "duration_s": 10, "rt_delay_s": 1, "deadline_factor": colocate.DEADLINE_FACTOR,
               "date": "2026-01-01 00:00 UTC", "device": "NVIDIA H200", "settings": self.results}
        text = colocate.markdown(doc)
        self.assertIn("| sluice-mps | 2.00 | 3.00 | 3.30 | 1.00 | 0.0% | 18.1 |", text)
        self.assertIn("NO (400 steps)", text)
        with tempfile.TemporaryDirectory() as tmp:
            results = Path(tmp)
            (results / "colocation_train.json").write_text(json.dumps(doc))
            readme = results / "README.md"
            readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\nrest\n")
            sys.argv = ["report.py", "--results", str(results), "--readme", str(readme)]
            report.main()
            out = readme.read_text()
        self.assertTrue(out.startswith("intro\n") and out.endswith(f"{report.END}\nrest\n"))
        self.assertNotIn("old", out)
        self.assertIn("| train | sluice-mps | 3.00 | 1.00 | 0.0% | 18.1 | 0.90 | **no** |", out)
        self.assertIn("goal ≤ 1.05: met), BE 0.90× MPS (goal ≥ 0.9: met)", out)

    def test_the_table_says_which_device_ran_each_workload(self):
        docs = [{"workload": w, "device": d, "date": t} for w, d, t in
                (("train", "H100", "2026-01-02 00:00 UTC"), ("A", "H200", "2026-01-01 00:00 UTC"),
                 ("B", "H100", "2026-01-03 00:00 UTC"))]
        self.assertEqual(report.where(docs), "train, B on H100 (2026-01-02 00:00 UTC to 2026-01-03 00:00 UTC); "
                                             "A on H200 (2026-01-01 00:00 UTC)")


class Rounds(unittest.TestCase):
    """--rounds: each round's ratios come from its own alone runs; the table shows their median."""

    def setUp(self):
        losses = [float(i) for i in range(400)]
        changed = list(losses)
        changed[3] = 0.5
        self.rounds = []
        # sluice-mps's p99 in the three rounds: 3.0, 6.0, 4.5 over alone p99s of 3.0, 3.0, 1.5.
        for alone_p99, p99, be_values in ((3.0, 3.0, losses), (3.0, 6.0, losses), (1.5, 4.5, changed)):
            results = {
                "rt-alone": run(rt([1.0] * 98 + [alone_p99, 9.0])),
                "rt-alone-2": run(rt([1.0] * 98 + [alone_p99, 9.0])),
                "be-alone": run(be(30, losses)),
                "mps": run(rt([1.0] * 98 + [p99, 9.0]), be(20, losses)),
                "sluice-mps": run(rt([1.0] * 98 + [p99, 9.0]), be(18, be_values)),
            }
            colocate.summarize(ARGS, results)
            self.rounds.append(results)
        self.combined = colocate.combine_rounds(self.rounds)

    def test_ratios_are_the_median_of_same_round_ratios_with_their_range(self):
        s = self.combined["sluice-mps"]["summary"]
        # Per round 1.0, 2.0, 3.0: the median of the ratios, not the ratio of the medians (4.5 / 3.0).
        self.assertAlmostEqual(s["rt_p99_ratio"], 2.0)
        self.assertEqual(s["rt_p99_ratio_range"], [1.0, 3.0])
        self.assertAlmostEqual(s["rt_p99_ms"], 4.5)
        self.assertEqual(s["rounds"], 3)
        self.assertEqual([r["rt_p99_ratio"] for r in self.combined["sluice-mps"]["round_summaries"]], [1.0, 2.0, 3.0])

    def test_be_must_be_identical_in_every_round(self):
        check = self.combined["sluice-mps"]["summary"]["be"][0]["identical_to_alone"]
        self.assertEqual((check["compared_steps"], check["identical_steps"], check["ok"]), (1200, 1199, False))
        self.assertTrue(self.combined["mps"]["summary"]["be"][0]["identical_to_alone"]["ok"])

    def test_a_single_round_is_left_as_it_is(self):
        self.assertIs(colocate.combine_rounds(self.rounds[:1])["mps"], self.rounds[0]["mps"])

    def test_tables_show_the_range_after_each_ratio(self):
        doc = {"workload": "train", "spec": colocate.WORKLOADS["train"], "order": list(self.combined),
               "duration_s": 10, "rounds": 3, "rt_delay_s": 1, "deadline_factor": colocate.DEADLINE_FACTOR,
               "date": "2026-01-01 00:00 UTC", "device": "NVIDIA H200", "settings": self.combined}
        self.assertIn("| 2.00 [1.00–3.00] |", colocate.markdown(doc))
        self.assertIn("3 rounds of every setting, interleaved", colocate.markdown(doc))
        text = report.table([doc])
        self.assertIn("| train | sluice-mps | 4.50 | 2.00 [1.00–3.00] |", text)
        self.assertIn("- train (median of 3 rounds): sluice-mps RT p99 2.00× alone", text)


class Policy(unittest.TestCase):
    def test_scheduler_knobs_apply_under_each_settings_switches(self):
        policy = colocate.bench_policy("sluice-mps-no-partition", {"holdoff_ms": 5, "partition": True})
        self.assertEqual(policy["scheduler"], {"holdoff_ms": 5, "partition": False})
        self.assertTrue(policy["defaults"]["kill"])
        self.assertEqual(colocate.bench_policy("sluice-mps-no-kill")["scheduler"], {})
        self.assertFalse(colocate.bench_policy("sluice-mps-no-kill")["defaults"]["kill"])

    def test_a_reserve_setting_fixes_the_reserve_over_the_knobs(self):
        policy = colocate.bench_policy("sluice-mps-reserve-32", {"reserve_sms": "auto", "holdoff_ms": 5})
        self.assertEqual(policy["scheduler"], {"reserve_sms": 32, "holdoff_ms": 5})
        self.assertTrue(policy["defaults"]["kill"])
        self.assertTrue(colocate.known_setting("sluice-mps-reserve-64"))
        for bad in ("sluice-mps-reserve-20", "sluice-mps-reserve-0", "sluice-mps-reserve-", "sluice-mps-reserve-x8",
                    "sluice-mps-no-mps"):
            self.assertFalse(colocate.known_setting(bad), bad)


if __name__ == "__main__":
    unittest.main(verbosity=2)
