from pathlib import Path

from setuptools import find_packages, setup

SHIPPED = ("recipes", "spaces")
version = {}
exec((Path(__file__).parent / "autodistil_evo" / "__init__.py").read_text(), version)

setup(
    name="autodistil-evo",
    version=version["__version__"],
    description="Distil a teacher LM into a family of students by evolutionary NAS (AutoDistil).",
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    license="MIT",
    license_files=["LICENSE"],
    # The shipped recipes and spaces stay top-level folders of the checkout and are installed inside the
    # package (autodistil_evo/_data/), where `--recipe quickstart` and `--space minilm-l6` find them.
    packages=find_packages(include=["autodistil_evo", "autodistil_evo.*"]) + [f"autodistil_evo._data.{d}" for d in SHIPPED],
    package_dir={f"autodistil_evo._data.{d}": d for d in SHIPPED},
    package_data={f"autodistil_evo._data.{d}": ["*.yaml", "*.json"] for d in SHIPPED},
    install_requires=[
        # torch is installed first and pinned by the Makefile (a CPU build from local disk);
        # this range only accepts it, so pip never pulls another build.
        "torch>=2.4",
        "transformers>=5,<6",
        "datasets>=5,<6",
        "pymoo==0.6.2",
        "deepspeed>=0.19,<0.20",
        "click>=8,<9",
        "rich>=15,<16",
        "numpy>=2,<3",
        "safetensors",
        "pyyaml",
        "matplotlib",
        # finetune metrics (F1, MCC; Pearson / Spearman)
        "scikit-learn>=1.5,<2",
        "scipy>=1.10",
    ],
    extras_require={
        # ruff and import-linter are pinned: a newer release may add checks and turn main red overnight.
        "test": ["pytest", "ruff==0.17.5", "import-linter==2.16"],
        # `autodistil-evo onnx` and `bench --runtime onnxruntime`
        "onnx": ["onnx==1.23.2", "onnxscript==0.7.2", "onnxruntime==1.32.0"],
        # students of a sentence-transformers teacher load with SentenceTransformer(DIR); its trainer (the
        # st-recipe row of benchmarks/embedding_students.py) needs accelerate
        "st": ["sentence-transformers==6.2.0", "accelerate>=1.1,<2"],
    },
    entry_points={"console_scripts": ["autodistil-evo=autodistil_evo.cli:main"]},
)
