"""The public Python API: ``profile``, ``evaluate``, ``search`` and ``apply``
(re-exported by ``smpq_onnx``).
"""
