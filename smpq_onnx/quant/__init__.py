"""The quantization room: options and policies, quantizers, histograms, calibration, rounding."""
