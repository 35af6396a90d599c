"""Jobs that write a trained model for others: ``medfoundry export`` (a timm folder, ONNX files, a
Hugging Face folder, each with its model card) and the maintainers' released encoders."""
