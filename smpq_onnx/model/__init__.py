"""The model room: loading, canonicalization, shapes, quantizable layers, groups and the graph view.

Everything here reads an FP32 ONNX model and describes it; nothing quantizes or evaluates.
"""
