"""The pipeline: intake, the submission state machine, deliveries, and the workers running them."""
