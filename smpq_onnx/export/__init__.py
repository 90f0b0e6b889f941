"""The export room: the deployable QDQ model of a policy and its encodings.

Below the engine: the engine's deployed evaluation runs exactly what this room emits.
"""
