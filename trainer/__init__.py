"""pricer's training worker: LoRA fine-tuning that writes every checkpoint as a revision."""
