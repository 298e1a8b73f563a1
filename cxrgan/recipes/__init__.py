"""One small module per published method or experiment, wiring data, balancers, classifiers and evaluation."""
