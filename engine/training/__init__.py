"""Training the `demo` preset's models on generated scenes (``promptcam train-demo``)."""
