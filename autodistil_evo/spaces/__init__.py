"""Search spaces: K compact sub-spaces of Transformer shapes (uniform or per layer), and their exact cost."""

from autodistil_evo.spaces.cost import count_flops, count_params, mean_flops
from autodistil_evo.spaces.families import FAMILIES, Family, family
from autodistil_evo.spaces.space import Arch, ModelDims, SearchSpace, SubSpace, TeacherShape, load_space

__all__ = ["FAMILIES", "Family", "family", "Arch", "ModelDims", "SearchSpace", "SubSpace", "TeacherShape", "load_space", "count_flops", "count_params", "mean_flops"]
