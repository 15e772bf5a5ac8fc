#!/usr/bin/env python3
"""A small r2serve gRPC client: streams a Generate (or Chat) answer to stdout.

It compiles the Python stubs from the repository's proto/ with grpc_tools (into a temporary
directory, nothing is written to the tree), so it needs only the test venv (scripts/setup):

    .venv/bin/python scripts/grpc_client.py --target 127.0.0.1:50051 --prompt "Hello"
    .venv/bin/python scripts/grpc_client.py --target 127.0.0.1:50051 --chat "Say hi"

Options: --max-tokens N, --temperature T, --seed S, --api-key KEY (sent as
`authorization: Bearer KEY`), --ids (print the token ids instead of the text). The last line
printed is the finish reason and the usage. Exit status: 0, or 1 with the gRPC status on stderr.
"""
import argparse
import importlib
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[1] / "proto"


def load_stubs(out_dir):
    """Compiles proto/r2serve/v1/*.proto into out_dir and imports the modules."""
    from grpc_tools import protoc
    import grpc_tools

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    protos = sorted(str(p) for p in (PROTO_ROOT / "r2serve" / "v1").glob("*.proto"))
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}", *protos]
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on " + " ".join(protos))
    sys.path.insert(0, str(out_dir))
    pb = importlib.import_module("r2serve.v1.inference_pb2")
    pb_grpc = importlib.import_module("r2serve.v1.inference_pb2_grpc")
    return pb, pb_grpc


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="127.0.0.1:50051")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--prompt", help="Generate from this text")
    what.add_argument("--chat", help="Chat: one user message")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--api-key", default="")
    parser.add_argument("--ids", action="store_true", help="print token ids, not text")
    args = parser.parse_args()

    import grpc

    with tempfile.TemporaryDirectory() as tmp:
        pb, pb_grpc = load_stubs(tmp)
        sampling = pb.SamplingParams(max_tokens=args.max_tokens)
        if args.temperature is not None:
            sampling.temperature = args.temperature
        if args.seed is not None:
            sampling.seed = args.seed
        metadata = [("authorization", f"Bearer {args.api_key}")] if args.api_key else []
        stub = pb_grpc.InferenceStub(grpc.insecure_channel(args.target))
        if args.prompt is not None:
            call = stub.Generate(pb.GenerateRequest(text=args.prompt, sampling=sampling),
                                 metadata=metadata, timeout=300)
        else:
            message = pb.ChatMessage(role="user", content=args.chat)
            call = stub.Chat(pb.ChatRequest(messages=[message], sampling=sampling),
                             metadata=metadata, timeout=300)
        finish, usage = None, None
        try:
            for response in call:
                for choice in response.choices:
                    if args.ids:
                        for token in choice.token_ids:
                            print(token, end=" ", flush=True)
                    else:
                        text = choice.text if args.prompt is not None else (
                            choice.reasoning + choice.content)
                        print(text, end="", flush=True)
                    if choice.finish_reason:
                        finish = pb.FinishReason.Name(choice.finish_reason)
                if response.HasField("usage"):
                    usage = response.usage
        except grpc.RpcError as e:
            print(f"\ngrpc_client: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
        print(f"\n[{finish}; prompt_tokens={usage.prompt_tokens} "
              f"completion_tokens={usage.completion_tokens}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
