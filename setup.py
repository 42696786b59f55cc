"""Ships the root-level ``conf/`` tree inside the wheel as ``physicsml/conf``."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["physicsml", "physicsml.*"]), "physicsml.conf"],
    package_dir={"physicsml.conf": "conf"},
)
