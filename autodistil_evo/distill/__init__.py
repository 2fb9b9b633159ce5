"""Task-agnostic SuperLM training: MiniLMv2 relation distillation with sandwich sampling on DeepSpeed."""
