"""The elastic SuperLM and the standalone student model it extracts."""

from autodistil_evo.supernet.elastic import SuperLM, build_student, stride_layers, student_config
from autodistil_evo.supernet.modeling_student import StudentConfig, StudentForSequenceClassification, StudentModel

__all__ = ["SuperLM", "build_student", "student_config", "stride_layers", "StudentConfig", "StudentModel", "StudentForSequenceClassification"]
