"""metalite.export: tf_keras backbone -> full-int8 TFLite bundle (converting needs TensorFlow, reading does not).

``bundle.write_bundle`` writes a bundle atomically, ``inspect.inspect_bundle`` describes and verifies one,
``edgetpu.check_model``/``compile_edgetpu`` predict and run the Edge TPU compilation, ``tflite`` converts.
Submodules import TensorFlow only when converting, always through ``tfcompat`` (tf_keras, quiet), which
``metalite.training`` uses too; reading bundles (``inspect``) needs no TensorFlow: the TFLite schema module
ai-edge-litert ships will do (``flatbuf``).
"""
