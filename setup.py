from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [
    line.strip()
    for line in (here / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="mindcv",
    version="0.1.0",
    description="Config-driven image classification on MindSpore, built around ConvNeXt",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mindcv", "mindcv.*"]),
    package_data={"mindcv": ["ops/*.cc", "ops/*.h", "native/*.h", "data/*.cc", "selftest_reference/*.json"]},
    python_requires=">=3.9",
    install_requires=requirements,
)
