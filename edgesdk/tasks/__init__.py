"""Pre- and post-processing per task, numpy only: class labels and top-k, YOLO letterbox/decode/NMS,
tokenizers and pooling, audio loading. Imports only edgesdk.core."""
