"""autodistil-evo: distil a teacher into a family of students by evolutionary NAS (AutoDistil)."""

__version__ = "0.1.0"
