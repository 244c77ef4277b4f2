"""Is this something the model knows? Out-of-distribution statistics, the radiograph gate and its probe images."""
