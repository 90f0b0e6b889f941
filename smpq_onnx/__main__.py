from smpq_onnx.cli.main import main

main()
