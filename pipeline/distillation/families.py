"""Students, their families and the methods each family compares (DESIGN.md "Trustworthy comparison").

A student is named `<family>-<method>` (params `distill.students`; DVC stages `distill@<name>` and
`evaluate@<name>`). Each family puts its methods in its paper's setting and compares every method
with its own `<family>-none`, the same student trained without a teacher:

===========  ==========================  ===============================  ====================================
family       paper's setting             student (the task's             methods
                                         `student_kinds`, tasks/)
===========  ==========================  ===============================  ====================================
``va``       VideoAdviser (Wang et al.   text only / two-branch           none, kd, self, videoadviser
             2023): a cheap student      audio-visual
``msd``      MSD (Jin et al. 2021): a    text + video + audio /           none, kd, uniform, population,
             multimodal student          two-branch audio-visual          instance, learned (MSD weightings)
===========  ==========================  ===============================  ====================================

So `va-videoadviser` is VideoAdviser's step 2 into the text student, `va-self` the same loss from
the `self` control teacher (training/teacher.py), and `msd-population` MSD with population weights into the
multimodal student. Plain data, no torch: config, report and the DVC stages read it cheaply.
"""

from __future__ import annotations

import dataclasses

from pipeline.core.config import ConfigError

WEIGHTINGS: tuple[str, ...] = ("uniform", "population", "instance", "learned")  # = msd.WEIGHTINGS (tested)
MSD_PREFIX = "msd-"


@dataclasses.dataclass(frozen=True)
class Family:
    name: str  # the student name's prefix
    title: str  # for the report
    methods: tuple[str, ...]  # method suffixes; a student is f"{name}-{suffix}"
    limit: str  # the known limit (synthetic data) a model of this family is compared with: what its student sees

    def method(self, suffix: str) -> str:
        """The distillation method of a suffix: `learned` in the msd family is `msd-learned`, else itself."""
        return MSD_PREFIX + suffix if suffix in WEIGHTINGS else suffix


FAMILIES: dict[str, Family] = {
    "va": Family("va", "VideoAdviser family: the text-only student (VideoAdviser's setting)",
                 ("none", "kd", "self", "videoadviser"), "text"),
    "msd": Family("msd", "MSD family: the multimodal student (MSD's setting)",
                  ("none", "kd", *WEIGHTINGS),
                  "video+audio+text"),
}
BASELINE = "none"  # every method is compared with its family's student trained without a teacher


@dataclasses.dataclass(frozen=True)
class Student:
    name: str  # e.g. msd-population
    family: Family
    suffix: str  # e.g. population
    method: str  # e.g. msd-population

    @property
    def baseline(self) -> str:
        """The student every method of the family is compared with: `<family>-none`."""
        return f"{self.family.name}-{BASELINE}"


def all_students() -> list[str]:
    return [f"{f.name}-{m}" for f in FAMILIES.values() for m in f.methods]


def parse_student(name: str) -> Student:
    """`msd-population` -> Student(family msd, method msd-population); ConfigError listing the valid names."""
    family, _, suffix = name.partition("-")
    if family not in FAMILIES or suffix not in FAMILIES[family].methods:
        raise ConfigError(f"unknown student {name!r}: a student is <family>-<method>. Available: {all_students()}")
    f = FAMILIES[family]
    return Student(name=name, family=f, suffix=suffix, method=f.method(suffix))
