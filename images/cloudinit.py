"""cloud-init NoCloud seeds: meta-data, user-data and network-config on an ISO 9660 volume labelled "cidata".

The user-data is composed when the instance is accepted (so a bad template is refused at
once); the seed volume is built by the worker, which sends it to the host like an image.
"""

from __future__ import annotations

import email
import io
import re
import subprocess
from dataclasses import dataclass
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import yaml

from images.exceptions import UnsafeImage

CLOUD_CONFIG = "#cloud-config"
_KEY = re.compile(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)"
                  r"@openssh\.com) [A-Za-z0-9+/=]+( [^\x00-\x1f\x7f]*)?$")
NETWORK_CONFIG = {"version": 2, "ethernets": {"all": {"match": {"name": "e*"}, "dhcp4": True}}}


def hash_password(password: str) -> str:
    """A SHA-512 crypt hash (what /etc/shadow and cloud-init take); the password itself is never stored."""
    if not password or "\n" in password or "\x00" in password:
        raise UnsafeImage("the password must be a single line")
    result = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise UnsafeImage(f"the password could not be hashed: {result.stderr.strip()[:200]}")
    return result.stdout.strip()


def parse_ssh_keys(text: str) -> list[str]:
    """Public keys, one per line; anything that is not one is refused with its line number."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not _KEY.match(line):
            raise UnsafeImage(f"line {number} of the SSH keys is not an OpenSSH public key")
        keys.append(line)
    return keys


def parse_cloud_config(text: str) -> dict:
    """A template's #cloud-config as a mapping; refused with the reason if it is not one."""
    if not text.strip():
        return {}
    if not text.lstrip().startswith(CLOUD_CONFIG):
        raise UnsafeImage("the user-data must start with #cloud-config")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UnsafeImage(f"the user-data is not valid YAML: {str(exc)[:300]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UnsafeImage("the user-data must be a YAML mapping of cloud-config keys")
    return data


def compose_user_data(*, hostname: str, ssh_keys: list[str], password_hash: str = "", cloud_config: str = "",
                      script: str = "") -> str:
    """The instance's user-data: the template's cloud-config with its hostname, keys and password, and the
    provisioning script as a second MIME part when there is one."""
    config = parse_cloud_config(cloud_config)
    config["hostname"] = hostname
    config["preserve_hostname"] = False
    if ssh_keys:
        existing = config.get("ssh_authorized_keys", [])
        if not isinstance(existing, list):
            raise UnsafeImage("ssh_authorized_keys in the user-data must be a list")
        config["ssh_authorized_keys"] = [*existing, *ssh_keys]
    if password_hash:
        config["ssh_pwauth"] = True
        config["chpasswd"] = {"expire": False, "users": [{"name": "root", "password": password_hash,
                                                          "type": "hash"}]}
    document = CLOUD_CONFIG + "\n" + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    if not script.strip():
        return document
    message = MIMEMultipart()
    message.attach(MIMEText(document, "cloud-config"))
    message.attach(MIMEText(script if script.startswith("#!") else "#!/bin/sh\n" + script, "x-shellscript"))
    return message.as_string()


def with_hostname(user_data: str, hostname: str) -> str:
    """The user-data with another hostname (a clone's): in its cloud-config, alone or the first part of a MIME
    message (its script left as it is)."""
    if not user_data.startswith("Content-Type"):
        config = parse_cloud_config(user_data)
        config["hostname"] = hostname
        return CLOUD_CONFIG + "\n" + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    message = email.message_from_string(user_data)
    for part in message.walk():
        if part.get_content_type() == "text/cloud-config":
            changed = with_hostname(part.get_payload(decode=True).decode(), hostname)
            del part["Content-Transfer-Encoding"]
            part.set_payload(changed, charset="utf-8")
    return message.as_string()


@dataclass(frozen=True)
class NicConfig:
    """What the guest needs to know of one NIC: its MAC, whether DHCP gives it its IPv4 address, and the
    addresses it sets itself ("10.0.0.5/24", "fd00::5/64"), with a gateway and DNS servers where no
    DHCP server tells it those."""

    mac: str
    dhcp4: bool = True
    static: tuple[str, ...] = ()
    gateway: str = ""
    dns: tuple[str, ...] = ()


def network_config(nics: list[NicConfig]) -> dict:
    """cloud-init's network-config (version 2): each NIC matched by its MAC, DHCP where CloudPanel's DHCP
    server pins its IPv4 address, static addresses where no such server runs and for IPv6 (DHCPv6 cannot
    pin an address to a MAC); DHCP on every NIC if none is known."""
    if not nics:
        return NETWORK_CONFIG
    ethernets = {}
    for index, nic in enumerate(nics):
        entry: dict = {"match": {"macaddress": nic.mac}, "set-name": f"eth{index}"}
        if nic.dhcp4:
            entry["dhcp4"] = True
        if nic.static:
            entry["addresses"] = list(nic.static)
        if nic.gateway:
            entry["routes"] = [{"to": "default", "via": nic.gateway}]
        if nic.dns:
            entry["nameservers"] = {"addresses": list(nic.dns)}
        ethernets[f"eth{index}"] = entry
    return {"version": 2, "ethernets": ethernets}


def meta_data(*, instance_id: str, hostname: str) -> str:
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname}, sort_keys=False)


def build_seed(*, meta: str, user: str, network: dict = NETWORK_CONFIG) -> bytes:
    """The NoCloud seed as an ISO 9660 image (Rock Ridge and Joliet names), volume label "cidata"."""
    import pycdlib  # only workers build seeds: the web process is spared the library

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    files = {"meta-data": meta, "user-data": user, "network-config": yaml.safe_dump(network, sort_keys=False)}
    for index, (name, text) in enumerate(files.items()):
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), f"/SEED{index}.;1", rr_name=name, joliet_path=f"/{name}")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()
