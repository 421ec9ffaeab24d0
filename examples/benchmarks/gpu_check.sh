#!/usr/bin/env bash
# The MI benchmark and a short Trainer run on one CUDA GPU in bf16, with peak memory from
# torch.cuda.max_memory_allocated. Run from the repository root with hf_cotmi importable.
set -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
cd "$(dirname "$0")"
echo "== mi_overhead: the issue's shape (batch 8, input 128, label 8, rationale 128), bf16"
python3 mi_overhead.py --device cuda --dtype bf16 --warmup-steps 3 --timed-rounds 15 --memory-steps 3
echo "== mi_overhead: batch 64, rationale 256 (the size where a materialised softmax costs GBs), bf16"
python3 mi_overhead.py --device cuda --dtype bf16 --batch-size 64 --rationale-length 256 --warmup-steps 3 \
  --timed-rounds 15 --memory-steps 3
echo "== DSSMITrainer.train() with bf16=True, batch 64, rationale 256, 30 steps: DSS then DSS + MI"
python3 trainer_step.py --bf16 --steps 30 --batch-size 64 --rationale-length 256
echo "== memory: chunked output projection vs stock fine-tuning and unchunked DSS + MI (Qwen-like and T5-small), bf16"
python3 memory.py --device cuda --dtype bf16 --warmup-steps 3 --timed-rounds 15 --memory-steps 3
