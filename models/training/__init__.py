"""flashsim models package: training scripts (torch is imported by them only, never at runtime)."""


def device_text(device) -> str:
    """The training device for a model card: 'cpu', or e.g. 'cuda (NVIDIA H100 80GB HBM3)'."""
    if str(device).startswith("cuda"):
        import torch

        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return str(device)
