"""The OpenSim path: virtual skin markers, a per-track OpenSim model, scaling and inverse
kinematics run with the ``opensim`` package (docs/opensim.md).

``export_opensim(track, video_id, dest, body_model)`` writes, per track, a folder
``<dest>/<video_id>_track<id>_opensim/`` with:

* ``model.osim``: the generic model (body model template shape) and ``model_scaled.osim``:
  scaled to the track by OpenSim's ScaleTool from a static trial of the track's own body;
* ``markers.trc``: the virtual markers (mm, OpenSim ground frame: X forward, Y up, Z right);
* ``ik.mot``: model coordinates from OpenSim's InverseKinematicsTool (degrees; pelvis
  translations in metres), continuous over time;
* ``scale_setup.xml``, ``ik_setup.xml``: the tools' set-up files, to rerun in OpenSim;
* ``scale_report.json``, ``ik_report.json`` (+ ``ik_marker_errors.sto``): scale factors, marker
  errors of the static trial and per-frame marker errors of the inverse kinematics.
"""

from __future__ import annotations

from hmrflow.jobs.export.opensim.run import OpenSimUnavailableError, export_opensim, opensim_available

__all__ = ["OpenSimUnavailableError", "export_opensim", "opensim_available"]
