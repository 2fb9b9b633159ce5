"""Students out of the Pareto set: select, export as Hugging Face folders, fine-tune, benchmark."""
