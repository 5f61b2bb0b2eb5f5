"""The service layer: one module per area (its commands over the one command path, and its
scheduled jobs), plus the composition root (`bootstrap`)."""
