"""BatchNorm with a negative running_var: torch (training and inference), tf.nn and ONNX Runtime (inference) accept it.

    .venv/bin/python docs/findings/negative-running-var.py
"""
import numpy as np, torch, torch.nn.functional as F
x = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
rv = -torch.ones(2); rm = torch.zeros(2)
y = F.batch_norm(torch.tensor(x), rm, rv, training=True, momentum=0.1, eps=1e-5)
print("torch training: raised nothing, running_var ->", rv.numpy())
y = F.batch_norm(torch.tensor(x), torch.zeros(2), -torch.ones(2), training=False, eps=1e-5)
print("torch inference: y ->", y.numpy()[0])
import tensorflow as tf
y = tf.nn.batch_normalization(tf.constant(x), tf.zeros(2), -tf.ones(2), None, None, 1e-5)
print("tf.nn inference: y ->", y.numpy()[0])
import onnx, onnxruntime as ort
from onnx import helper, TensorProto
node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-5)
g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "xsbmv"],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)]); m.ir_version = 10
s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
y = s.run(None, {"x": x, "s": np.ones(2, np.float32), "b": np.zeros(2, np.float32), "m": np.zeros(2, np.float32), "v": -np.ones(2, np.float32)})[0]
print("ort inference: y ->", y[0])
