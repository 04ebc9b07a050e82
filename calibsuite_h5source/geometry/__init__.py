"""Detector geometry: pixel coordinates and images as psana draws them, without psana.

* :mod:`~calibsuite_h5source.geometry.text`: psana's geometry text, parsed into a tree;
* :mod:`~calibsuite_h5source.geometry.segments`: each sensor type's pixel layout;
* :mod:`~calibsuite_h5source.geometry.engine`: coordinates, indexes, images (:class:`Geometry`);
* :mod:`~calibsuite_h5source.geometry.defaults`: psana's default geometry per type (package data);
* :mod:`~calibsuite_h5source.geometry.source`: which geometry a run's detector uses.
"""

from calibsuite_h5source.geometry.defaults import default_geometry_name, default_geometry_text
from calibsuite_h5source.geometry.engine import Geometry, ImageMap, geometry_from_text
from calibsuite_h5source.geometry.text import GeometryError, parse_geometry

__all__ = ["Geometry", "GeometryError", "ImageMap", "default_geometry_name", "default_geometry_text",
           "geometry_from_text", "parse_geometry"]
