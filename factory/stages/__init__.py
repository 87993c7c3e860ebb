"""Pipeline stages: policy composition, paraphrase, personas, dialogue, labels, filters, traces."""
