"""An ordinary PyTorch training script, watched by dynlab: the three lines marked ``# dynlab``.

Run it, then from another terminal: ``dynlab live``, ``dynlab set digits lr=0.02``,
``dynlab pause digits`` / ``resume`` / ``stop``, or open the app and use
*File → Attach to running training…*.
"""

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn

import dynlab  # dynlab

parser = argparse.ArgumentParser(description="A BatchNorm MLP on sklearn's 8x8 digits.")
parser.add_argument("--epochs", type=int, default=50)
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--record", default=None, help="HDF5 file (default: the recordings folder)")
args = parser.parse_args()

torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32)
x = (x - x.mean(0)) / (x.std(0) + 1e-6)
y = torch.tensor(digits.target)
train = torch.utils.data.TensorDataset(x[:1500], y[:1500])
loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
model = nn.Sequential(
    nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(),
    nn.Linear(128, 64), nn.BatchNorm1d(64), nn.ReLU(),
    nn.Linear(64, 10),
)  # fmt: skip
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
criterion = nn.CrossEntropyLoss()

with dynlab.watch(model, optimizer, name="digits", record=args.record, loss_fn=criterion,  # dynlab
                  probe_batch=(x[1500:], y[1500:]), probes={"hessian_top": 100, "neural_collapse": 50}) as lab:  # fmt: skip
    for _ in range(args.epochs):
        for xb, yb in loader:
            out = model(xb)
            loss = criterion(out, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            lab.step(loss=loss, accuracy=(out.argmax(1) == yb).float().mean())  # dynlab
print(f"finished: {lab.state}, {lab.step_count} steps, recorded to {lab.recording}")
