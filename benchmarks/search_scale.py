"""How long does a default search take, and where does the time go? Two models, one run each.

Runs ``smpq-onnx search`` with default settings (samples and rounds sized by --max-evals) on
the bundled example and on MobileNetV2 with ImageNet weights (agreement with FP32 on held-out
natural images), and records wall time per phase, evaluations and the result.

    python benchmarks/search_scale.py [--mobilenet-eval 128] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from harness import assets
from harness.mobilenet_v2 import export_mobilenet_v2


def run_search(args: list[str], out: Path) -> dict:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "smpq_onnx", "search", *args, "--out",
                             str(out), "--json"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    report = json.loads(result.stdout)
    return {"wall_s": time.perf_counter() - start, "phases_s": report["phases_s"],
            "evaluations": report["evaluations"], "fp32": report["fp32"],
            "final": report["final"], "final_fast_engine": report["final_fast_engine"],
            "deployed_evaluations": report["deployed_evaluations"],
            "costs": report["costs"], "budget": report["budget"],
            "settings": report["settings"], "players": len(report["contributions"]),
            "layers": len(report["layers"]), "eval_samples": report["eval_samples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mobilenet-eval", type=int, default=128)
    parser.add_argument("--mobilenet-calib", type=int, default=64)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "search_scale.json")
    args = parser.parse_args()
    assets.ensure_packages()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows["fashion_resnet"] = run_search([], folder / "example")
        print("fashion_resnet", rows["fashion_resnet"])
        model = export_mobilenet_v2(folder / "mobilenet_v2.onnx")
        images = assets.natural_images(args.mobilenet_eval + args.mobilenet_calib, seed=0)
        np.savez(folder / "eval.npz", x=images[:args.mobilenet_eval])
        np.savez(folder / "calib.npz", x=images[args.mobilenet_eval:])
        rows["mobilenet_v2"] = run_search(
            [str(model), "--data", str(folder / "eval.npz"), "--calib-data",
             str(folder / "calib.npz"), "--metric", "agreement"], folder / "mobilenet")
        print("mobilenet_v2", rows["mobilenet_v2"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
