"""Declarative configuration: YAML files -> JSON Schema -> frozen attrs objects."""

from .loader import KIND_DIRS as KIND_DIRS
from .loader import config_files as config_files
from .loader import load_config as load_config
from .model import LEVEL_NAMES as LEVEL_NAMES
from .model import Agent as Agent
from .model import ApiResource as ApiResource
from .model import Config as Config
from .model import DbResource as DbResource
from .model import FileResource as FileResource
from .model import OpenAIModel as OpenAIModel
from .model import Policy as Policy
from .model import PolicyRule as PolicyRule
from .model import Resource as Resource
from .model import Rule as Rule
from .model import RulesModel as RulesModel
from .model import SandboxNeeds as SandboxNeeds
from .model import Source as Source
from .model import Tool as Tool
from .paths import example_config_dir as example_config_dir
from .paths import resolve_config_dir as resolve_config_dir
from .units import Bytes as Bytes
from .units import Seconds as Seconds
from .units import parse_duration as parse_duration
from .units import parse_size as parse_size
