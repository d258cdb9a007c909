#!/usr/bin/env python3
"""After `sam build`: every function of template.yaml has an aarch64 ELF `bootstrap`; prints the
size of each, raw and zipped as Lambda receives it. Exits non-zero when one is missing or wrong."""
import io
import os
import re
import sys
import zipfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
build = os.path.join(root, ".aws-sam", "build")
with open(os.path.join(root, "template.yaml")) as f:
    functions = re.findall(r"^  (\w+):\n    Type: AWS::Serverless::Function", f.read(), re.M)

EM_AARCH64 = 183
failed = False
for name in functions:
    path = os.path.join(build, name, "bootstrap")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        print(f"FAIL {name}: {error}")
        failed = True
        continue
    is_elf64 = data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1
    machine = int.from_bytes(data[18:20], "little") if is_elf64 else None
    if machine != EM_AARCH64:
        print(f"FAIL {name}: bootstrap is not a 64-bit little-endian aarch64 ELF (e_machine {machine})")
        failed = True
        continue
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("bootstrap", data)
    print(f"ok   {name}: aarch64 ELF bootstrap, {len(data) / 1e6:.2f} MB, zipped {len(buffer.getvalue()) / 1e6:.2f} MB")
sys.exit(1 if failed or not functions else 0)
