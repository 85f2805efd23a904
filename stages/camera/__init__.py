"""The camera of a clip: intrinsics (given or estimated), camera motion, gravity and ground.

Modules: :mod:`.intrinsics` (user intrinsics, scaling to the decoded frames, checks),
:mod:`.fov` (the field-of-view network), :mod:`.motion` (frame-to-frame camera rotation
from the background), :mod:`.observe` (the frame stage that gathers both while frames
exist), :mod:`.ground` (gravity and ground plane from foot contacts), :mod:`.world` (the
video stage that puts every track in the final camera and the shared world frame).
"""
