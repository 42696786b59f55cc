"""ANI (Smith et al. 2017, Chem. Sci. 8:3192) written with torch only."""

from physicsml.models.ani.aev import AEVComputer
from physicsml.models.ani.model import ANI

__all__ = ["ANI", "AEVComputer"]
