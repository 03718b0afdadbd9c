"""The command line: the only place that imports the HTTP app and the trainer."""
