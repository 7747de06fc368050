"""Security properties of template.yaml, so that a careless edit fails CI.

The checker works on what CloudFormation would deploy: the template is parsed with cfn-lint's own
decoder (so !Ref, !If, !Sub ... work), then run through the SAM translator offline, so that roles
and policies SAM generates (policy templates, managed policy names, event sources) are checked like
the ones written by hand. `findings(template)` returns a list of problems; the real template must
have none, and every mutated copy in `RejectsCarelessEdits` must have at least the expected one,
which proves each check can fail. `check_endpoints` also evaluates the Rules, the Conditions and the
function's egress rules for every combination of the endpoint parameters (and each DbAuth mode),
so that no parameter set the Rules accept leaves the function without a route to an endpoint.

Run: scripts/lint-template.sh (or .venv/bin/python tests/template/test_template.py -v).
TEMPLATE_UNDER_TEST=path checks another file, e.g. a mutated copy.
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import json
import logging
import os
import re
import tomllib
import types
import unittest
from pathlib import Path
from typing import Any, Iterator

from cfnlint.decode import decode, decode_str
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = Path(os.environ.get("TEMPLATE_UNDER_TEST", REPO / "template.yaml"))

# The crate's binary (no [[bin]] section: the binary is named after the package).
BINARY = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["name"]

# Actions allowed on Resource "*": only ec2:DescribeSubnets (Lambda needs it for VpcConfig, EC2
# Describe actions take no resource). Every other statement in this template names its resource.
# Add an action here only if IAM cannot scope it (e.g. xray:PutTraceSegments), never a data-plane one.
WILDCARD_RESOURCE_ACTIONS: frozenset[str] = frozenset({"ec2:DescribeSubnets"})
# What the role may be granted on EC2 in its own statements (the ENI actions come from the policy below).
INLINE_EC2_ACTIONS = frozenset({"ec2:DescribeSubnets"})

# The one AWS managed policy the function's role carries: the ENI actions Lambda takes for VpcConfig,
# on ENIs it creates at run time. Not AWSLambdaVPCAccessExecutionRole or AWSLambdaBasicExecutionRole:
# they grant logs actions on every log group of the account.
ENI_POLICY = "AWSLambdaENIManagementAccess"
ALLOWED_MANAGED_POLICIES = frozenset({ENI_POLICY})
# What the role may do in CloudWatch Logs, on the function's own log group only; no CreateLogGroup
# (the template creates the group).
LOG_ACTIONS = frozenset({"logs:CreateLogStream", "logs:PutLogEvents"})

# The configuration contract (README "Configuration"); log level and format come from LoggingConfig.
# Every one is declared, so that `sam local invoke --env-vars` can set it (SAM overrides declared
# variables only); an empty value means unset (tests/integration/cold_start.rs proves it).
CONTRACT_ENV = frozenset(
    {
        "DB_AUTH",
        "DB_SECRET_ID",
        "DB_USER",
        "DB_HOST",
        "DB_PORT",
        "DB_NAME",
        "DB_CA_FILE",
        "DB_CA_PEM",
        "DB_CONNECT_TIMEOUT_MS",
        "DB_STATEMENT_TIMEOUT_MS",
        "DEADLINE_MARGIN_MS",
        "PARK_QUEUE_URL",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
        "AWS_ENDPOINT_URL_SQS",
    }
)
# Set only for local runs, through --env-vars: a deployed stack must leave them empty.
LOCAL_ONLY_ENV = frozenset(
    {"DB_CA_PEM", "DEADLINE_MARGIN_MS", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL_SQS"}
)
# What the function's role may do on the park queue: send (parking) and what Lambda's event source
# mapping needs to replay it. Nothing on the dead-letter queue (SQS moves messages there itself).
PARK_QUEUE_ACTIONS = frozenset({"sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"})
# What Lambda does with the role outside the execution environment (ENIs, the event source mapping's
# reads of the park queue), which the function's code must be denied: AWS adds lambda:SourceFunctionArn
# only to calls from the execution environment and to Lambda's log writes.
LAMBDA_ONLY_ACTIONS = frozenset({"ec2:*", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"})
# What the code itself calls, and Lambda's own calls that carry the key too (log writes, X-Ray, EFS
# mounts): never denied.
CODE_ACTIONS = ("secretsmanager:GetSecretValue", "kms:Decrypt", "rds-db:connect", "dsql:DbConnect",
                "dsql:DbConnectAdmin", "sqs:SendMessage", *sorted(LOG_ACTIONS), "xray:PutTraceSegments",
                "elasticfilesystem:ClientMount")
FROM_THE_CODE = {"Null": {"lambda:SourceFunctionArn": "false"}}
# The metrics namespace the function writes (src/metrics.rs).
METRICS_NAMESPACE = re.search(r'pub const NAMESPACE: &str = "([^"]+)"', (REPO / "src" / "metrics.rs").read_text()).group(1)
COGNITO_BUDGET_SECONDS = 5
# The time budget (README "Time budget"; src/config.rs checks the same): a connect and an INSERT
# at their caps, plus the deadline margin, fit in the Timeout; the INSERT's cap is at most the
# database role's statement_timeout (sql/app-role.sql).
DEADLINE_MARGIN_MS = 200
ROLE_STATEMENT_TIMEOUT_MS = 1000 * int(
    re.search(r"SET statement_timeout = %L', :'app_role', '(\d+)s'", (REPO / "sql" / "app-role.sql").read_text()).group(1)
)
# The time kept to park a user (src/park.rs), on top of the caps when a park queue is configured.
PARK_TIMEOUT_MS = int(re.search(r"PARK_TIMEOUT: Duration = Duration::from_millis\((\d+)\)", (REPO / "src" / "park.rs").read_text()).group(1))
LOOPBACK = "127.0.0.1/32"  # the "no egress" placeholder rule
NO_VALUE = {"Ref": "AWS::NoValue"}

logging.getLogger("samtranslator").setLevel(logging.ERROR)


# --- loading -------------------------------------------------------------------------------------


def plain(node: Any) -> Any:
    """cfn-lint's nodes (dict/str subclasses with line marks) as plain JSON values."""
    return json.loads(json.dumps(node))


def load_file(path: Path) -> dict:
    template, matches = decode(str(path))
    if matches or template is None:
        raise ValueError(f"{path} does not parse: {[str(m) for m in matches]}")
    return plain(template)


def load_text(text: str) -> dict:
    template, matches = decode_str(text)
    if matches or template is None:
        raise ValueError(f"template text does not parse: {[str(m) for m in matches]}")
    return plain(template)


def translate(template: dict) -> dict:
    """The SAM transform, offline (what `sam validate` does: local code paths become fake S3 URIs)."""
    sam = copy.deepcopy(template)
    for resource in sam.get("Resources", {}).values():
        props = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
            if not props["CodeUri"].startswith("s3://"):
                props["CodeUri"] = "s3://bucket/code.zip"
    if "Transform" not in sam:
        return sam
    session = types.SimpleNamespace(region_name="us-east-1")  # only the region is read
    translator = Translator(None, Parser(), boto_session=session)
    return translator.translate(sam, parameter_values={}, get_managed_policy_map=lambda: {})


# --- walking intrinsic functions ------------------------------------------------------------------

Conds = tuple  # ((condition name, branch taken), ...)


def alternatives(node: Any, conds: Conds = ()) -> Iterator[tuple[Any, Conds]]:
    """Each value `node` can take through Fn::If, with the conditions that select it; NoValue drops out."""
    if isinstance(node, dict) and list(node) == ["Fn::If"]:
        name, when_true, when_false = node["Fn::If"]
        yield from alternatives(when_true, conds + ((name, True),))
        yield from alternatives(when_false, conds + ((name, False),))
    elif node != NO_VALUE:
        yield node, conds


def can_be_no_value(node: Any) -> bool:
    if node == NO_VALUE:
        return True
    if isinstance(node, dict) and list(node) == ["Fn::If"]:
        return any(can_be_no_value(branch) for branch in node["Fn::If"][1:])
    return False


def items(node: Any, conds: Conds = ()) -> Iterator[tuple[Any, Conds]]:
    """Elements of a list-valued property (the list and each element may be an Fn::If)."""
    for value, c in alternatives(node, conds):
        if value is None:
            continue
        for element in value if isinstance(value, list) else [value]:
            yield from alternatives(element, c)


def walk(node: Any, conds: Conds = (), path: tuple = ()) -> Iterator[tuple[tuple, Any, Conds]]:
    for value, c in alternatives(node, conds):
        yield path, value, c
        if isinstance(value, dict):
            for key, child in value.items():
                yield from walk(child, c, path + (key,))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                yield from walk(child, c, path + (index,))


def literal(node: Any) -> str | None:
    """A string with the literal parts of `node` (Fn::Sub variables substituted, ${..} kept), or None
    for a value only known at deploy time (Ref, GetAtt, ...)."""
    if isinstance(node, str):
        return node
    if isinstance(node, (int, float)):
        return str(node)
    if isinstance(node, dict) and list(node) == ["Fn::Sub"]:
        sub = node["Fn::Sub"]
        if isinstance(sub, str):
            return sub
        text, variables = sub
        for name, value in variables.items():
            resolved = literal(value)
            text = text.replace("${" + name + "}", resolved if resolved is not None else "<" + name + ">")
        return text
    if isinstance(node, dict) and list(node) == ["Fn::Join"]:
        delimiter, parts = node["Fn::Join"]
        return delimiter.join(literal(p) or "<value>" for p in (parts if isinstance(parts, list) else []))
    return None


def ref_name(node: Any) -> str | None:
    return node["Ref"] if isinstance(node, dict) and list(node) == ["Ref"] else None


def getatt(node: Any) -> tuple[str, str] | None:
    if isinstance(node, dict) and list(node) == ["Fn::GetAtt"]:
        value = node["Fn::GetAtt"]
        parts = value.split(".", 1) if isinstance(value, str) else value
        return parts[0], parts[1]
    return None


def as_list(node: Any) -> list:
    return node if isinstance(node, list) else [node]


def resources_of(template: dict, *types_: str) -> dict[str, dict]:
    return {k: v for k, v in template.get("Resources", {}).items() if v.get("Type") in types_}


def resource_conds(resource: dict) -> Conds:
    return ((resource["Condition"], True),) if "Condition" in resource else ()


def refers_to(node: Any, logical_id: str) -> bool:
    return ref_name(node) == logical_id or (getatt(node) or (None,))[0] == logical_id


def param(template: dict, name: str | None) -> dict | None:
    return template.get("Parameters", {}).get(name) if name else None


def non_empty_condition(template: dict, condition: str, parameter: str) -> bool:
    """Whether `condition` is exactly "parameter is not empty"."""
    body = template.get("Conditions", {}).get(condition)
    if not (isinstance(body, dict) and list(body) == ["Fn::Not"]):
        return False
    inner = body["Fn::Not"][0]
    if not (isinstance(inner, dict) and list(inner) == ["Fn::Equals"]):
        return False
    return sorted(map(json.dumps, inner["Fn::Equals"])) == sorted(
        map(json.dumps, [{"Ref": parameter}, ""])
    )


def implies(template: dict, condition: str, parameter: str, value: str) -> bool:
    """Whether `condition` holds only when `parameter` equals `value` (directly or in an Fn::And)."""
    body = template.get("Conditions", {}).get(condition)
    wanted = sorted(map(json.dumps, [{"Ref": parameter}, value]))
    if isinstance(body, dict) and list(body) == ["Fn::Equals"]:
        return sorted(map(json.dumps, body["Fn::Equals"])) == wanted
    if isinstance(body, dict) and list(body) == ["Fn::And"]:
        for part in body["Fn::And"]:
            if isinstance(part, dict) and list(part) == ["Condition"] and implies(template, part["Condition"], parameter, value):
                return True
            if isinstance(part, dict) and list(part) == ["Fn::Equals"] and sorted(map(json.dumps, part["Fn::Equals"])) == wanted:
                return True
    return False


def only_in_mode(template: dict, conds: Conds, mode: str) -> bool:
    return any(taken and implies(template, c, "DbAuth", mode) for c, taken in conds)


def pattern_rejects(parameter: dict | None, *samples: str) -> bool:
    """Whether the parameter's AllowedPattern rejects every sample (a missing pattern rejects nothing)."""
    pattern = (parameter or {}).get("AllowedPattern")
    return pattern is not None and all(re.fullmatch(pattern, s) is None for s in samples)


# --- the checks ----------------------------------------------------------------------------------


def the_function(template: dict) -> tuple[str, dict] | None:
    functions = resources_of(template, "AWS::Lambda::Function")
    return next(iter(functions.items())) if len(functions) == 1 else None


def check_architecture(template: dict, name: str, architectures: Any) -> list[str]:
    """arm64 is what deploys: literally, or through a parameter whose default is arm64 and that
    only a local build overrides (to x86_64); samconfig.toml's deploy settings never set it."""
    if architectures == ["arm64"]:
        return []
    parameter = ref_name(architectures[0]) if isinstance(architectures, list) and len(architectures) == 1 else None
    definition = param(template, parameter)
    if definition is None or definition.get("Default") != "arm64" or not set(definition.get("AllowedValues", [])) <= {"arm64", "x86_64"}:
        return [f"{name}: Architectures must be [arm64], or a parameter defaulting to arm64"]
    samconfig = tomllib.loads((REPO / "samconfig.toml").read_text())
    overrides = samconfig.get("default", {}).get("deploy", {}).get("parameters", {}).get("parameter_overrides", [])
    if any(str(o).startswith(f"{parameter}=") for o in as_list(overrides)):
        return [f"samconfig.toml: the deploy settings must not override {parameter}"]
    return []


def check_time_budget(template: dict, name: str, timeout: Any) -> list[str]:
    variables = the_function(template)[1].get("Properties", {}).get("Environment", {}).get("Variables", {})
    caps = {}
    for var in ("DB_CONNECT_TIMEOUT_MS", "DB_STATEMENT_TIMEOUT_MS"):
        definition = param(template, ref_name(variables.get(var)))
        if definition is None or "MaxValue" not in definition:
            return [f"{name}: {var} must come from a parameter with a MaxValue"]
        caps[var] = int(definition["MaxValue"])
    problems = []
    if caps["DB_STATEMENT_TIMEOUT_MS"] > ROLE_STATEMENT_TIMEOUT_MS:
        problems.append(f"{name}: DB_STATEMENT_TIMEOUT_MS may exceed the role's statement_timeout ({ROLE_STATEMENT_TIMEOUT_MS} ms)")
    parking = PARK_TIMEOUT_MS if "PARK_QUEUE_URL" in variables else 0
    if isinstance(timeout, int) and sum(caps.values()) + DEADLINE_MARGIN_MS + parking > timeout * 1000:
        problems.append(f"{name}: a connect and an INSERT at their caps plus the margin and parking may outlast the {timeout} s Timeout")
    return problems


def check_function(template: dict) -> list[str]:
    found = the_function(template)
    if found is None:
        return ["expected exactly one Lambda function (the trigger)"]
    name, function = found
    props = function.get("Properties", {})
    problems = []
    if props.get("Runtime") != "provided.al2023":
        problems.append(f"{name}: Runtime must be provided.al2023")
    problems += check_architecture(template, name, props.get("Architectures"))
    if props.get("Handler") != "bootstrap":
        problems.append(f"{name}: Handler must be bootstrap")
    metadata = function.get("Metadata", {})
    if metadata.get("BuildMethod") != "rust-cargolambda":
        problems.append(f"{name}: Metadata.BuildMethod must be rust-cargolambda")
    if metadata.get("BuildProperties", {}).get("Binary") != BINARY:
        problems.append(f"{name}: Metadata.BuildProperties.Binary must be {BINARY} (not another workspace binary)")
    timeout = props.get("Timeout", 3)
    if not (isinstance(timeout, int) and timeout <= COGNITO_BUDGET_SECONDS):
        problems.append(f"{name}: Timeout must be a literal <= {COGNITO_BUDGET_SECONDS} s (Cognito waits 5 s)")
    variables = props.get("Environment", {}).get("Variables", {})
    if "DB_SECRET_ID" not in variables:
        problems.append(f"{name}: environment lacks DB_SECRET_ID")
    for unknown in sorted(set(variables) - CONTRACT_ENV):
        problems.append(f"{name}: environment variable {unknown} is not in the configuration contract")
    for missing in sorted(CONTRACT_ENV - set(variables)):
        problems.append(f"{name}: environment variable {missing} is not declared (sam local invoke --env-vars could not set it)")
    for local in sorted(LOCAL_ONLY_ENV & set(variables)):
        if variables[local] != "":
            problems.append(f"{name}: environment variable {local} must be empty in the template (set locally through --env-vars)")
    problems += check_time_budget(template, name, timeout)
    logging_config = props.get("LoggingConfig", {})
    if logging_config.get("LogFormat") != "JSON":
        problems.append(f"{name}: LoggingConfig.LogFormat must be JSON")
    level = param(template, ref_name(logging_config.get("ApplicationLogLevel")))
    if level is None or "TRACE" in level.get("AllowedValues", ["TRACE"]):
        problems.append(f"{name}: the log level must come from a parameter that does not allow TRACE (the runtime logs raw events)")
    elif "FATAL" in level.get("AllowedValues", []):
        problems.append(f"{name}: the log level must not allow FATAL (Lambda would drop every error the function logs)")
    groups = resources_of(template, "AWS::Logs::LogGroup")
    group = ref_name(logging_config.get("LogGroup"))
    if group not in groups:
        problems.append(f"{name}: LoggingConfig.LogGroup must be a log group of this template")
    elif param(template, ref_name(groups[group].get("Properties", {}).get("RetentionInDays"))) is None:
        problems.append(f"{group}: RetentionInDays must come from a parameter")
    return problems


def check_vpc(template: dict) -> list[str]:
    found = the_function(template)
    if found is None:
        return []
    name, function = found
    vpc = function.get("Properties", {}).get("VpcConfig")
    if not isinstance(vpc, dict):
        return [f"{name}: VpcConfig missing (the function must run in private subnets)"]
    problems = []
    subnets = ref_name(vpc.get("SubnetIds"))
    subnet_param = param(template, subnets)
    if subnet_param is None or subnet_param.get("Type") != "List<AWS::EC2::Subnet::Id>":
        problems.append(f"{name}: VpcConfig.SubnetIds must be a parameter of type List<AWS::EC2::Subnet::Id>")
    elif "Private" not in subnets:
        problems.append(f"{name}: the subnet parameter must say it takes private subnets ({subnets})")
    rules = json.dumps(template.get("Rules", {}))
    if '"Fn::ValueOfAll": ["AWS::EC2::Subnet::Id", "VpcId"]' not in rules:
        problems.append("Rules: nothing asserts that the subnets belong to the VPC")
    groups = resources_of(template, "AWS::EC2::SecurityGroup")
    ids = list(items(vpc.get("SecurityGroupIds")))
    if not ids:
        problems.append(f"{name}: VpcConfig.SecurityGroupIds is empty")
    for value, _ in ids:
        if not any(refers_to(value, group) for group in groups):
            problems.append(f"{name}: security group {value} is not one of this template's (its rules go unchecked)")
    return problems


def function_security_groups(template: dict) -> set[str]:
    found = the_function(template)
    if found is None:
        return set()
    groups = resources_of(template, "AWS::EC2::SecurityGroup")
    vpc = found[1].get("Properties", {}).get("VpcConfig") or {}
    return {g for value, _ in items(vpc.get("SecurityGroupIds")) for g in groups if refers_to(value, g)}


def egress_rules(template: dict) -> Iterator[tuple[str, dict]]:
    """(owning group's logical id or "?", rule) for inline and standalone egress rules."""
    for name, group in resources_of(template, "AWS::EC2::SecurityGroup").items():
        for rule, _ in items(group.get("Properties", {}).get("SecurityGroupEgress")):
            yield name, rule
    for name, resource in resources_of(template, "AWS::EC2::SecurityGroupEgress").items():
        props = resource.get("Properties", {})
        owner = next(
            (g for g in resources_of(template, "AWS::EC2::SecurityGroup") if refers_to(props.get("GroupId"), g)),
            "?",
        )
        yield owner, props


def check_network(template: dict) -> list[str]:
    problems = []
    for name, group in resources_of(template, "AWS::EC2::SecurityGroup").items():
        egress = group.get("Properties", {}).get("SecurityGroupEgress")
        if not list(items(egress)) or can_be_no_value(egress):
            problems.append(f"{name}: no SecurityGroupEgress, so EC2's default allow-all egress rule stays")
    for owner, rule in egress_rules(template):
        cidr = rule.get("CidrIp")
        protocol = str(rule.get("IpProtocol"))
        if cidr in ("0.0.0.0/0",) or rule.get("CidrIpv6") == "::/0":
            problems.append(f"{owner}: egress to the whole internet ({cidr or '::/0'})")
        if protocol in ("-1", "all") and cidr != LOOPBACK:
            problems.append(f"{owner}: egress on all protocols and ports")
        if protocol in ("tcp", "udp", "6", "17") and rule.get("FromPort") != rule.get("ToPort"):
            problems.append(f"{owner}: egress on a port range {rule.get('FromPort')}-{rule.get('ToPort')}")
    for resource_type, key in (("AWS::EC2::SecurityGroup", "SecurityGroupIngress"),):
        for name, group in resources_of(template, resource_type).items():
            for rule, _ in items(group.get("Properties", {}).get(key)):
                if rule.get("CidrIp") == "0.0.0.0/0" or rule.get("CidrIpv6") == "::/0":
                    problems.append(f"{name}: ingress from anywhere")
    for name, resource in resources_of(template, "AWS::EC2::SecurityGroupIngress").items():
        props = resource.get("Properties", {})
        if props.get("CidrIp") == "0.0.0.0/0" or props.get("CidrIpv6") == "::/0":
            problems.append(f"{name}: ingress from anywhere")
    problems += check_function_egress(template)
    return problems


def check_function_egress(template: dict) -> list[str]:
    """The function talks to the proxy on DB_PORT and to Secrets Manager on 443, nothing else."""
    found = the_function(template)
    if found is None:
        return []
    name, function = found
    db_port = ref_name(function.get("Properties", {}).get("Environment", {}).get("Variables", {}).get("DB_PORT"))
    mine = function_security_groups(template)
    groups = resources_of(template, "AWS::EC2::SecurityGroup")
    problems, to_proxy = [], False
    for owner, rule in egress_rules(template):
        if owner not in mine:
            continue
        destination = rule.get("DestinationSecurityGroupId")
        dest_param = param(template, ref_name(destination))
        to_group = (dest_param is not None and dest_param.get("Type") in (
            "AWS::EC2::SecurityGroup::Id", "String")) or any(refers_to(destination, g) for g in groups)
        to_cidr_param = param(template, ref_name(rule.get("CidrIp"))) is not None
        port = rule.get("FromPort")
        if port != rule.get("ToPort"):
            continue  # reported by check_network
        if db_port is not None and ref_name(port) == db_port:
            if not (dest_param is not None and dest_param.get("Type") == "AWS::EC2::SecurityGroup::Id"):
                problems.append(f"{owner}: database egress must go to the proxy's security group parameter only")
            else:
                to_proxy = True
        elif port in (443, "443"):
            if not (to_group or to_cidr_param):
                problems.append(f"{owner}: HTTPS egress must go to the endpoint's security group or the VPC CIDR parameter")
        else:
            problems.append(f"{owner}: unexpected egress rule {json.dumps(rule)} on the function's security group")
    if mine and not to_proxy:
        problems.append(f"{name}: no egress rule to the proxy's security group on DB_PORT")
    return problems


def policy_statements(template: dict) -> Iterator[tuple[str, dict, Conds, bool]]:
    """(resource, statement, conditions, is_trust_policy) for every policy document in the template."""
    for name, resource in template.get("Resources", {}).items():
        for path, node, conds in walk(resource.get("Properties", {}), resource_conds(resource)):
            if isinstance(node, dict) and "Statement" in node and (not path or path[-1] != "Statement"):
                trust = "AssumeRolePolicyDocument" in path
                for statement, c in items(node["Statement"], conds):
                    yield name, statement, c, trust


def statement_actions(statement: dict) -> list[str]:
    return [a for a, _ in items(statement.get("Action", []))]


def function_log_group(template: dict) -> str | None:
    """The log group of this template the function's LoggingConfig names."""
    found = the_function(template)
    if found is None:
        return None
    group = ref_name(found[1].get("Properties", {}).get("LoggingConfig", {}).get("LogGroup"))
    return group if group in resources_of(template, "AWS::Logs::LogGroup") else None


def is_log_group_arn(node: Any, group: str | None) -> bool:
    """!GetAtt group.Arn or !Sub "${group.Arn}": the group's ARN, which ends in :* (all its streams)."""
    if group is None:
        return False
    return getatt(node) == (group, "Arn") or (
        isinstance(node, dict) and list(node) == ["Fn::Sub"] and literal(node) == "${" + group + ".Arn}"
    )


def check_policies(template: dict) -> list[str]:
    problems = []
    function = the_function(template)
    env = function[1].get("Properties", {}).get("Environment", {}).get("Variables", {}) if function else {}
    log_group = function_log_group(template)
    role = getatt(function[1].get("Properties", {}).get("Role")) if function else None
    log_grants = 0
    secret_param = next((ref_name(v) for v, _ in alternatives(env.get("DB_SECRET_ID")) if ref_name(v)), None)
    if not pattern_rejects(
        param(template, secret_param),
        "*",
        "arn:aws:secretsmanager:eu-west-1:111122223333:secret:*",
        "arn:aws:secretsmanager:eu-west-1:111122223333:secret:*-AbC123",
        "arn:aws:secretsmanager:eu-west-1:111122223333:secret:db?-AbC123",
    ):
        problems.append(f"parameter {secret_param}: AllowedPattern must accept only a full secret ARN, no wildcards")
    secret_grants = 0
    for name, statement, conds, trust in policy_statements(template):
        if statement.get("Effect") != "Allow":
            continue
        where = f"{name} statement {statement.get('Sid', json.dumps(statement)[:80])}"
        if trust:
            continue
        if "NotAction" in statement or "NotResource" in statement:
            problems.append(f"{where}: NotAction/NotResource in an Allow grants everything else")
            continue
        actions = statement_actions(statement)
        for action in actions:
            if not isinstance(action, str) or action == "*" or action.endswith(":*"):
                problems.append(f"{where}: wildcard action {action}")
        resources = list(items(statement.get("Resource")))
        if not resources:
            problems.append(f"{where}: no Resource")
        for resource, _ in resources:
            text = literal(resource)
            if text is not None and "*" in text:
                broad = [a for a in actions if a not in WILDCARD_RESOURCE_ACTIONS]
                if broad:
                    problems.append(f"{where}: wildcard Resource {text!r} for {', '.join(map(str, broad))}")
        services = {str(a).split(":", 1)[0].lower() for a in actions}
        if "secretsmanager" in services:
            if actions != ["secretsmanager:GetSecretValue"]:
                problems.append(f"{where}: only secretsmanager:GetSecretValue may be granted, got {actions}")
            if secret_param is None or [r for r, _ in resources] != [{"Ref": secret_param}]:
                problems.append(f"{where}: Secrets Manager access must be on the one secret (Ref {secret_param})")
            if "Principal" not in statement:  # identity policy (not the endpoint's resource policy)
                secret_grants += 1
            if not only_in_mode(template, conds, "secret"):
                problems.append(f"{where}: Secrets Manager access must exist only when DbAuth=secret")
        if "rds-db" in services:
            if actions != ["rds-db:connect"]:
                problems.append(f"{where}: only rds-db:connect may be granted, got {actions}")
            if [literal(r) for r, _ in resources] != [
                "arn:${AWS::Partition}:rds-db:${AWS::Region}:${AWS::AccountId}:dbuser:${DbResourceId}/${DbUser}"
            ]:
                problems.append(f"{where}: rds-db:connect must be on dbuser:${{DbResourceId}}/${{DbUser}} only")
            if not only_in_mode(template, conds, "rds-iam"):
                problems.append(f"{where}: rds-db:connect must exist only when DbAuth=rds-iam")
        if "dsql" in services:
            if not set(actions) <= {"dsql:DbConnect", "dsql:DbConnectAdmin"}:
                problems.append(f"{where}: only dsql:DbConnect / dsql:DbConnectAdmin may be granted, got {actions}")
            if [literal(r) for r, _ in resources] != [
                "arn:${AWS::Partition}:dsql:${AWS::Region}:${AWS::AccountId}:cluster/${DsqlClusterId}"
            ]:
                problems.append(f"{where}: the DSQL connect action must be on cluster/${{DsqlClusterId}} only")
            if not only_in_mode(template, conds, "dsql-iam"):
                problems.append(f"{where}: the DSQL connect action must exist only when DbAuth=dsql-iam")
        if "kms" in services:
            problems += check_kms_statement(template, where, statement, actions, resources, conds)
        if "ec2" in services and not set(actions) <= INLINE_EC2_ACTIONS:
            problems.append(f"{where}: only {sorted(INLINE_EC2_ACTIONS)} may be granted on EC2 here (the ENI actions come from {ENI_POLICY}), got {actions}")
        if "logs" in services:
            if "logs:CreateLogGroup" in actions:
                problems.append(f"{where}: logs:CreateLogGroup must not be granted (the template creates the log group)")
            if not set(actions) <= LOG_ACTIONS:
                problems.append(f"{where}: only {sorted(LOG_ACTIONS)} may be granted on CloudWatch Logs, got {actions}")
            if not resources or not all(is_log_group_arn(r, log_group) for r, _ in resources):
                problems.append(f"{where}: CloudWatch Logs access must be on the function's log group ({log_group}) only")
            elif role is not None and name == role[0] and set(actions) == LOG_ACTIONS and not conds:
                log_grants += 1
        if "sqs" in services:
            park = park_queue(template)
            if not set(actions) <= PARK_QUEUE_ACTIONS:
                problems.append(f"{where}: only {sorted(PARK_QUEUE_ACTIONS)} may be granted on SQS, got {actions}")
            for resource, _ in resources:
                target = getatt(resource)
                if not (target and target[0] == park and target[1] == "Arn"):
                    problems.append(f"{where}: SQS access must be on the park queue only, not {resource}")
    problems += check_code_denials(template, role[0] if role else None)
    if secret_grants != 1:
        problems.append(f"expected exactly one identity statement granting GetSecretValue, found {secret_grants}")
    if function and log_grants != 1:
        problems.append(f"{function[0]}: its role must allow {sorted(LOG_ACTIONS)} on its log group ({log_group}) in exactly one unconditional statement, found {log_grants}")
    problems += check_managed_policies(template)
    return problems


def check_code_denials(template: dict, role: str | None) -> list[str]:
    """The function's role denies its code what only Lambda does with it, in one unconditional
    statement, and denies nothing the code or Lambda's log writes need."""
    problems, denied = [], set()
    for name, statement, conds, trust in policy_statements(template):
        if name != role or trust or statement.get("Effect") != "Deny":
            continue
        if "NotAction" in statement:
            problems.append(f"{name}: a Deny with NotAction denies everything else, what the function needs too")
        actions = {str(a).lower() for a in statement_actions(statement)}  # IAM matches actions in any case
        for needed in CODE_ACTIONS:
            if any(fnmatch.fnmatchcase(needed.lower(), pattern) for pattern in actions):
                problems.append(f"{name}: a Deny covers {needed}, which the function needs")
        if statement.get("Condition") == FROM_THE_CODE and statement.get("Resource") == "*" and not conds:
            denied |= actions
    missing = sorted(a for a in LAMBDA_ONLY_ACTIONS if not any(fnmatch.fnmatchcase(a.lower(), d) for d in denied))
    if role is not None and missing:
        problems.append(f"{role}: the function's code is not denied {missing} (a Deny on lambda:SourceFunctionArn present)")
    return problems


def check_kms_statement(template, where, statement, actions, resources, conds) -> list[str]:
    problems = []
    if actions != ["kms:Decrypt"]:
        problems.append(f"{where}: only kms:Decrypt may be granted, got {actions}")
    key_param = ref_name(resources[0][0]) if len(resources) == 1 else None
    if param(template, key_param) is None:
        problems.append(f"{where}: kms:Decrypt must be on the key ARN parameter only")
    elif not any(taken and non_empty_condition(template, c, key_param) for c, taken in conds):
        problems.append(f"{where}: kms:Decrypt must exist only under the condition that {key_param} is given")
    via = statement.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
    if not (literal(via) or "").startswith("secretsmanager."):
        problems.append(f"{where}: kms:Decrypt needs a kms:ViaService condition for secretsmanager")
    return problems


def check_managed_policies(template: dict) -> list[str]:
    problems, roles_with_eni_policy = [], set()
    for name, resource in template.get("Resources", {}).items():
        for path, node, _ in walk(resource.get("Properties", {})):
            if path and path[-1] == "ManagedPolicyArns":
                for arn, _ in items(node):
                    text = literal(arn) or ""
                    policy = text.rsplit("/", 1)[-1]
                    if ":iam::aws:policy/" not in text or policy not in ALLOWED_MANAGED_POLICIES:
                        problems.append(f"{name}: managed policy {text or arn} is not allowed (only {ENI_POLICY})")
                    if policy == ENI_POLICY:
                        roles_with_eni_policy.add(name)
    found = the_function(template)
    if found:
        role = getatt(found[1].get("Properties", {}).get("Role"))
        if role is None or role[0] not in roles_with_eni_policy:
            problems.append(f"{found[0]}: its role must carry {ENI_POLICY}")
        elif not check_trust(template, role[0]):
            problems.append(f"{role[0]}: only lambda.amazonaws.com may assume the function's role")
    return problems


def check_trust(template: dict, role: str) -> bool:
    document = template["Resources"][role].get("Properties", {}).get("AssumeRolePolicyDocument", {})
    principals = []
    for statement, _ in items(document.get("Statement")):
        principal = statement.get("Principal", {})
        if not isinstance(principal, dict) or set(principal) != {"Service"}:
            return False
        principals += [p for p, _ in items(principal["Service"])]
    return principals == ["lambda.amazonaws.com"]


def check_cognito(template: dict) -> list[str]:
    problems = []
    found = the_function(template)
    permissions = resources_of(template, "AWS::Lambda::Permission")
    for name, permission in permissions.items():
        props = permission.get("Properties", {})
        if isinstance(props.get("Principal"), str) and props["Principal"].endswith(".amazonaws.com"):
            if "SourceArn" not in props or can_be_no_value(props["SourceArn"]):
                problems.append(f"{name}: a service principal without SourceArn lets any resource of that service invoke")
    if found is None:
        return problems
    function_name = found[0]
    mine = {n: p["Properties"] for n, p in permissions.items()
            if refers_to(p.get("Properties", {}).get("FunctionName"), function_name)}
    if len(mine) != 1:
        return problems + [f"expected exactly one invoke permission on {function_name}, found {len(mine)}"]
    name, props = next(iter(mine.items()))
    if props.get("Principal") != "cognito-idp.amazonaws.com":
        problems.append(f"{name}: Principal must be cognito-idp.amazonaws.com")
    if props.get("Action") != "lambda:InvokeFunction":
        problems.append(f"{name}: Action must be lambda:InvokeFunction")
    if props.get("SourceAccount") != {"Ref": "AWS::AccountId"}:
        problems.append(f"{name}: SourceAccount must be this account")
    pools = resources_of(template, "AWS::Cognito::UserPool")
    arns = list(alternatives(props.get("SourceArn")))
    if not arns:
        problems.append(f"{name}: SourceArn missing")
    for arn, _ in arns:
        attribute = getatt(arn)
        pool_param = param(template, ref_name(arn))
        if attribute and attribute[0] in pools and attribute[1] == "Arn":
            continue
        if pool_param is not None and pattern_rejects(
            pool_param, "*", "arn:aws:cognito-idp:eu-west-1:111122223333:userpool/*"
        ) and ":userpool/" in pool_param.get("AllowedPattern", ""):
            continue
        problems.append(f"{name}: SourceArn {arn} must be the user pool ARN parameter (a pattern without wildcards) or this template's pool")
    for pool_name, pool in pools.items():
        target = pool.get("Properties", {}).get("LambdaConfig", {}).get("PostConfirmation")
        if not refers_to(target, function_name):
            problems.append(f"{pool_name}: LambdaConfig.PostConfirmation must be {function_name}")
    return problems


def park_queue(template: dict) -> str | None:
    """The queue PARK_QUEUE_URL names."""
    found = the_function(template)
    if found is None:
        return None
    url = found[1].get("Properties", {}).get("Environment", {}).get("Variables", {}).get("PARK_QUEUE_URL")
    queues = resources_of(template, "AWS::SQS::Queue")
    return next((q for value, _ in alternatives(url) for q in queues if refers_to(value, q)), None)


def check_parking(template: dict) -> list[str]:
    """The park queue and its dead-letter queue: encrypted, TLS only, a redrive that happens
    before messages expire, the function replaying with partial batch responses."""
    name = park_queue(template)
    if name is None:
        return ["PARK_QUEUE_URL must name this template's park queue (when ParkOnOutage)"]
    queues = resources_of(template, "AWS::SQS::Queue")
    problems = []
    for queue_name, queue in queues.items():
        props = queue.get("Properties", {})
        if props.get("SqsManagedSseEnabled") is not True and "KmsMasterKeyId" not in props:
            problems.append(f"{queue_name}: not encrypted (it holds personal data)")
        if queue.get("DeletionPolicy") != "Retain":
            problems.append(f"{queue_name}: DeletionPolicy must be Retain (it may hold users not yet recorded)")
    for policy_name, policy in resources_of(template, "AWS::SQS::QueuePolicy").items():
        guarded = [q for q, _ in items(policy.get("Properties", {}).get("Queues")) if any(refers_to(q, n) for n in queues)]
        if guarded and policy.get("DeletionPolicy") != "Retain":
            problems.append(f"{policy_name}: DeletionPolicy must be Retain (the retained queues keep their protections)")
    park = queues[name].get("Properties", {})
    redrive = park.get("RedrivePolicy") or {}
    dead = getatt(redrive.get("deadLetterTargetArn"))
    if dead is None or dead[0] not in queues or dead[0] == name:
        return problems + [f"{name}: RedrivePolicy must send to a dead-letter queue of this template"]
    receives = int(redrive.get("maxReceiveCount", 0))
    visibility = int(park.get("VisibilityTimeout", 30))
    retention = int(park.get("MessageRetentionPeriod", 345600))
    dead_retention = int(queues[dead[0]].get("Properties", {}).get("MessageRetentionPeriod", 345600))
    timeout = the_function(template)[1].get("Properties", {}).get("Timeout", 3)
    if not 1 <= receives <= 100:
        problems.append(f"{name}: maxReceiveCount must be between 1 and 100, not {receives}")
    if visibility < 6 * int(timeout):
        problems.append(f"{name}: VisibilityTimeout {visibility} s is under 6x the function's Timeout")
    if retention <= receives * visibility:
        problems.append(f"{name}: messages expire ({retention} s) before {receives} receives {visibility} s apart move them to the dead-letter queue")
    if dead_retention <= retention:
        problems.append(f"{dead[0]}: MessageRetentionPeriod must exceed the park queue's (SQS counts from the original enqueue)")
    tls_only = [
        statement for _, statement, _, _ in policy_statements(template)
        if statement.get("Effect") == "Deny"
        and statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") in ("false", False)
    ]
    covered = {getatt(r)[0] for s in tls_only for r, _ in items(s.get("Resource")) if getatt(r)}
    for queue_name in queues:
        if queue_name not in covered:
            problems.append(f"{queue_name}: no queue policy denying requests without TLS")
    role = getatt(the_function(template)[1].get("Properties", {}).get("Role"))
    senders_denied = [
        statement for _, statement, _, _ in policy_statements(template)
        if statement.get("Effect") == "Deny" and "sqs:SendMessage" in statement_actions(statement)
        and any(refers_to(r, name) for r, _ in items(statement.get("Resource")))
        and role is not None
        and all(
            any(refers_to(arn, role[0]) for arn, _ in items(allowed))
            for allowed, _ in alternatives(statement.get("Condition", {}).get("ArnNotEquals", {}).get("aws:PrincipalArn"))
        )
    ]
    if not senders_denied:
        problems.append(f"{name}: no queue policy denying SendMessage to all but the function's role (a message becomes a row)")
    mappings = [m.get("Properties", {}) for m in resources_of(template, "AWS::Lambda::EventSourceMapping").values()]
    replays = [m for m in mappings if refers_to(m.get("EventSourceArn"), name)]
    if len(replays) != 1:
        problems.append(f"{name}: expected one event source mapping replaying it, found {len(replays)}")
    elif "ReportBatchItemFailures" not in replays[0].get("FunctionResponseTypes", []):
        problems.append(f"{name}: the replay must use partial batch responses (ReportBatchItemFailures)")
    return problems


def check_alarms(template: dict) -> list[str]:
    """Operators learn from an alarm: errors, throttles, durations near the timeout, parked
    users, parked users still waiting (the queue's messages, in flight included) and any dead
    letter, whose alarm keeps its state when the idle queue's metrics stop."""
    found = the_function(template)
    if found is None:
        return []
    function, props = found[0], found[1].get("Properties", {})
    alarms = [
        {**a.get("Properties", {}), "_name": name}
        for name, a in resources_of(template, "AWS::CloudWatch::Alarm").items()
    ]

    def metrics(alarm: dict) -> list[dict]:
        """The metrics an alarm reads: its own, or those of its metric math."""
        stats = [m.get("MetricStat", {}).get("Metric", {}) for m, _ in items(alarm.get("Metrics"))]
        return [alarm, *stats]

    def on(namespace: str, metric: str, dimension: str, target: str | None) -> list[dict]:
        return [
            a for a in alarms
            if any(m.get("Namespace") == namespace and m.get("MetricName") == metric
                   and any(d.get("Name") == dimension and target and refers_to(d.get("Value"), target)
                           for d, _ in items(m.get("Dimensions")))
                   for m in metrics(a))
        ]

    problems = []
    park = park_queue(template)
    wanted = [
        ("AWS/Lambda", "Errors", "FunctionName", function),
        ("AWS/Lambda", "Throttles", "FunctionName", function),
        ("AWS/Lambda", "Duration", "FunctionName", function),
        (METRICS_NAMESPACE, "Parked", "FunctionName", function),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", park),
        ("AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", park),
    ]
    dead = getatt((resources_of(template, "AWS::SQS::Queue").get(park or "", {})
                   .get("Properties", {}).get("RedrivePolicy") or {}).get("deadLetterTargetArn"))
    wanted.append(("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", dead[0] if dead else None))
    for namespace, metric, dimension, target in wanted:
        if not on(namespace, metric, dimension, target):
            problems.append(f"no alarm on {namespace} {metric} of {target}")
    # A replay that keeps failing receives a message every VisibilityTimeout, and SQS leaves a
    # message received three times out of its queue's oldest-message age.
    if on("AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName", park):
        problems.append(
            "an alarm on the park queue's ApproximateAgeOfOldestMessage: it leaves out a message "
            "received three times, so a failing replay never reaches its threshold"
        )
    # The park queue's messages are counted with those in flight (being replayed, or waiting out
    # the visibility timeout after a failed replay): what the alarm returns must add both.
    waiting = [
        a for a in on("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", park)
        if a in on("AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", park)
    ]
    for alarm in waiting:
        entries = [m for m, _ in items(alarm.get("Metrics"))]
        ids = {
            m.get("MetricStat", {}).get("Metric", {}).get("MetricName"): m.get("Id")
            for m in entries
        }
        returned = [m for m in entries if m.get("ReturnData", True)]
        expression = returned[0].get("Expression", "") if len(returned) == 1 else ""
        used = set(re.findall(r"[a-z][A-Za-z0-9_]*", expression))
        wanted_ids = {ids.get("ApproximateNumberOfMessagesVisible"), ids.get("ApproximateNumberOfMessagesNotVisible")}
        if not wanted_ids <= used:
            problems.append(f"{alarm['_name']}: must return one expression adding the park queue's visible and in-flight messages")
    for alarm in on("AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", dead[0] if dead else None):
        if alarm.get("TreatMissingData") != "ignore":
            problems.append("the dead-letter alarm must ignore missing data (nothing polls that queue)")
    for alarm in on("AWS/Lambda", "Duration", "FunctionName", function):
        timeout_ms = 1000 * int(props.get("Timeout", 3))
        if not float(alarm.get("Threshold", timeout_ms)) < timeout_ms:
            problems.append(f"the Duration alarm's threshold must be under the {timeout_ms} ms Timeout")
    for alarm in alarms:
        if alarm.get("AlarmActions") is None:
            problems.append(f"{alarm['_name']}: no AlarmActions (the optional topic)")
    return problems


# --- reaching the VPC endpoints, for every parameter set the Rules accept ---------------------------

SG_A, SG_B = "sg-0aaaaaaaaaaaaaaaa", "sg-0bbbbbbbbbbbbbbbb"
VPC_CIDR = "10.0.0.0/16"
# Valid values for the parameters that have no default, and what each login mode's rules require.
BASE_PARAMETERS: dict[str, Any] = {
    "VpcId": "vpc-0123456789abcdef0",
    "PrivateSubnetIds": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"],
    "ProxySecurityGroupId": "sg-0123456789abcdef0",
    "DbHost": "myproxy.proxy-abc123.eu-west-1.rds.amazonaws.com",
    "UserPoolArn": "arn:aws:cognito-idp:eu-west-1:111122223333:userpool/eu-west-1_AbC123",
}
MODE_PARAMETERS: dict[str, dict[str, str]] = {
    "secret": {"DbSecretArn": "arn:aws:secretsmanager:eu-west-1:111122223333:secret:db-AbC123"},
    "rds-iam": {"DbSecretArn": "", "DbUser": "cognito_post_confirmation", "DbResourceId": "prx-0123456789abcdef0", "DbName": "app"},
    "dsql-iam": {"DbSecretArn": "", "DbUser": "cognito_post_confirmation", "DsqlClusterId": "abcdefghijklmnopqrstuvwxyz"},
}
# The parameters that decide how the function reaches Secrets Manager and SQS, and the values tried:
# every combination with every mode (the same group twice is the "one group for both endpoints" case).
ENDPOINT_CHOICES: dict[str, list[str]] = {
    "CreateSecretsManagerEndpoint": ["true", "false"],
    "SecretsManagerEndpointSecurityGroupId": ["", SG_A],
    "VpcCidr": ["", VPC_CIDR],
    "ParkOnOutage": ["true", "false"],
    "CreateSqsEndpoint": ["true", "false"],
    "SqsEndpointSecurityGroupId": ["", SG_A, SG_B],
}
ABSENT = object()  # what AWS::NoValue evaluates to: the list element or property is dropped


class Stack:
    """The template as CloudFormation would deploy it with one set of parameter values: Ref to a
    parameter, Fn::Equals, Fn::And, Fn::Or, Fn::Not, Condition, Fn::If and AWS::NoValue are
    resolved; Ref to a resource or pseudo parameter, Fn::GetAtt and the rest stay symbolic."""

    def __init__(self, template: dict, parameters: dict[str, Any]):
        self.template = template
        self.parameters = parameters
        self.conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = self.truth(self.template["Conditions"][name])
        return self.conditions[name]

    def truth(self, node: Any) -> bool:
        value = self.value(node)
        if not isinstance(value, bool):
            raise ValueError(f"not a condition: {json.dumps(node)}")
        return value

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in map(self.value, node) if v is not ABSENT]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (function, argument), = node.items()
            if function == "Ref":
                if argument == "AWS::NoValue":
                    return ABSENT
                return self.parameters[argument] if argument in self.template.get("Parameters", {}) else node
            if function == "Fn::Equals":
                left, right = map(self.value, argument)
                if isinstance(left, (dict, list)) or isinstance(right, (dict, list)):
                    raise ValueError(f"Fn::Equals on a value not known offline: {json.dumps(node)}")
                return str(left) == str(right)
            if function == "Fn::And":
                return all(self.truth(part) for part in argument)
            if function == "Fn::Or":
                return any(self.truth(part) for part in argument)
            if function == "Fn::Not":
                return not self.truth(argument[0])
            if function == "Condition":
                return self.condition(argument)
            if function == "Fn::If":
                name, when_true, when_false = argument
                return self.value(when_true if self.condition(name) else when_false)
            if function == "Fn::EachMemberEquals":
                return True  # AWS looks the subnets' VPC up; the enumeration's subnets are in its VPC
            if function.startswith("Fn::"):
                return node  # GetAtt, Sub, ...: known at deploy time only
        values = {key: self.value(child) for key, child in node.items()}
        return {key: v for key, v in values.items() if v is not ABSENT}

    def rejections(self) -> list[str]:
        """Why the Rules reject these values (each failing assertion's rule and AssertDescription)."""
        failed = []
        for name, rule in self.template.get("Rules", {}).items():
            if "RuleCondition" in rule and not self.truth(rule["RuleCondition"]):
                continue
            for assertion in rule.get("Assertions", []):
                if not self.truth(assertion["Assert"]):
                    failed.append(f"{name}: {assertion.get('AssertDescription', '')}")
        return failed

    def exists(self, resource: dict) -> bool:
        return "Condition" not in resource or self.condition(resource["Condition"])

    def function_egress(self) -> list[dict]:
        """The egress rules of the function's security groups, inline and standalone."""
        rules = []
        for group in sorted(function_security_groups(self.template)):
            egress = self.value(self.template["Resources"][group].get("Properties", {}).get("SecurityGroupEgress", []))
            rules += [] if egress is ABSENT else as_list(egress)
            for resource in resources_of(self.template, "AWS::EC2::SecurityGroupEgress").values():
                props = resource.get("Properties", {})
                if self.exists(resource) and refers_to(props.get("GroupId"), group):
                    rules.append({k: v for k, v in self.value(props).items() if k != "GroupId"})
        return rules

    def created_endpoint_groups(self, service: str) -> list[Any]:
        """The security groups of the interface endpoints for `service` that the stack creates."""
        return [
            group
            for resource in resources_of(self.template, "AWS::EC2::VPCEndpoint").values()
            if self.exists(resource) and (literal(resource.get("Properties", {}).get("ServiceName")) or "").endswith("." + service)
            for group in as_list(self.value(resource["Properties"].get("SecurityGroupIds", [])))
        ]


def parameter_set(template: dict, chosen: dict[str, str]) -> dict[str, Any]:
    """Every parameter's value: `chosen`, else what DbAuth's mode needs, else a valid dummy, else its default."""
    values = {name: str(p["Default"]) for name, p in template.get("Parameters", {}).items() if "Default" in p}
    values.update(BASE_PARAMETERS)
    values.update(MODE_PARAMETERS[chosen.get("DbAuth", values.get("DbAuth", "secret"))])
    values.update(chosen)
    return values


def parameter_sets(template: dict) -> Iterator[dict[str, Any]]:
    """Every combination of DbAuth and ENDPOINT_CHOICES, as full parameter sets."""
    for mode in MODE_PARAMETERS:
        for combination in itertools.product(*ENDPOINT_CHOICES.values()):
            yield parameter_set(template, {"DbAuth": mode, **dict(zip(ENDPOINT_CHOICES, combination))})


def describe(parameters: dict[str, Any]) -> str:
    return " ".join(f"{name}={parameters[name]!r}" for name in ("DbAuth", *ENDPOINT_CHOICES))


def reaches(rule: dict, key: str, destination: Any) -> bool:
    return (str(rule.get("IpProtocol")) in ("tcp", "6") and str(rule.get("FromPort")) == str(rule.get("ToPort")) == "443"
            and rule.get(key) == destination)


def endpoint_problems(stack: Stack) -> list[str]:
    """For one parameter set: the function's group must have an HTTPS egress rule to every endpoint
    it needs (Secrets Manager with DbAuth=secret, SQS with ParkOnOutage=true): to the endpoint the
    stack creates, else to the existing endpoint's group given, else to VpcCidr; no HTTPS egress
    nothing needs, no endpoint group given but unused, no rule with an empty destination, no two
    identical rules (AWS rejects those)."""
    p = stack.parameters
    needed = []  # (service, what creates it, the existing endpoint's groups in order of precedence)
    if p["DbAuth"] == "secret":
        needed.append(("secretsmanager", "CreateSecretsManagerEndpoint", [p["SecretsManagerEndpointSecurityGroupId"]]))
    if p["ParkOnOutage"] == "true":
        # Without an SQS group, the group of an existing Secrets Manager endpoint the function uses
        # is taken to be the group of both endpoints.
        shared = p["DbAuth"] == "secret" and p["CreateSecretsManagerEndpoint"] == "false"
        groups = [p["SqsEndpointSecurityGroupId"], p["SecretsManagerEndpointSecurityGroupId"] if shared else ""]
        needed.append(("sqs", "CreateSqsEndpoint", groups))
    where = describe(p)
    egress = stack.function_egress()
    problems, wanted = [], []
    for service, create, groups in needed:
        if p[create] == "true":
            targets = [("DestinationSecurityGroupId", g) for g in stack.created_endpoint_groups(service)]
            if not targets:
                problems.append(f"{where}: {create}=true but the stack creates no {service} endpoint")
        elif any(groups):
            targets = [("DestinationSecurityGroupId", next(g for g in groups if g))]
        elif p["VpcCidr"]:
            targets = [("CidrIp", p["VpcCidr"])]
        else:
            problems.append(f"{where}: the Rules accept a set in which nothing says how to reach the {service} endpoint")
            continue
        wanted += targets
        if not any(reaches(rule, key, target) for rule in egress for key, target in targets):
            problems.append(f"{where}: no HTTPS egress to the {service} endpoint (want {' or '.join(f'{k} {json.dumps(t)}' for k, t in targets)})")
    for parameter in ("SecretsManagerEndpointSecurityGroupId", "SqsEndpointSecurityGroupId"):
        if p[parameter] and not any(rule.get("DestinationSecurityGroupId") == p[parameter] for rule in egress):
            problems.append(f"{where}: {parameter} is given but unused (the Rules should refuse it, not ignore it)")
    seen = set()
    for rule in egress:
        for key in ("CidrIp", "DestinationSecurityGroupId"):
            if key in rule and rule[key] in ("", None):
                problems.append(f"{where}: egress rule with an empty {key}: {json.dumps(rule)}")
        identity = json.dumps({k: str(v) if isinstance(v, int) else v for k, v in rule.items() if k != "Description"}, sort_keys=True)
        if identity in seen:
            problems.append(f"{where}: duplicate egress rule (AWS rejects it): {identity}")
        seen.add(identity)
        if str(rule.get("FromPort")) == "443" and not any(reaches(rule, key, target) for key, target in wanted):
            problems.append(f"{where}: HTTPS egress no endpoint needs: {json.dumps(rule)}")
    return problems


def check_endpoints(template: dict) -> list[str]:
    """Every parameter set the Rules accept lets the function reach the endpoints it needs."""
    if the_function(template) is None or "Conditions" not in template:
        return []
    problems, accepted = [], 0
    for parameters in parameter_sets(template):
        stack = Stack(template, parameters)
        if stack.rejections():
            continue
        accepted += 1
        problems += endpoint_problems(stack)
    if not accepted:
        problems.append("the Rules reject every parameter set tried (nothing to check the endpoints' reachability on)")
    return problems


CHECKS = (check_function, check_vpc, check_network, check_policies, check_cognito, check_parking, check_alarms, check_endpoints)


def findings(template: dict) -> list[str]:
    """Every problem found in a SAM template (after the SAM transform)."""
    try:
        deployed = translate(template)
    except Exception as error:  # noqa: BLE001 - any translator failure is a finding
        return [f"SAM transform failed: {error}"]
    return [problem for check in CHECKS for problem in check(deployed)]


# --- tests ---------------------------------------------------------------------------------------


class TemplateIsSafe(unittest.TestCase):
    def test_the_template_has_no_findings(self):
        problems = findings(load_file(TEMPLATE))
        self.assertEqual(problems, [], "\n".join(problems))

    def test_the_checker_sees_the_statements_it_must_judge(self):
        # Guards against a checker that passes because it found nothing to look at.
        deployed = translate(load_file(TEMPLATE))
        actions = {a for _, s, _, trust in policy_statements(deployed) if not trust for a in statement_actions(s)}
        self.assertLessEqual(
            {"secretsmanager:GetSecretValue", "kms:Decrypt", "rds-db:connect", "dsql:DbConnect", "dsql:DbConnectAdmin"}
            | PARK_QUEUE_ACTIONS | LOG_ACTIONS | INLINE_EC2_ACTIONS,
            actions,
        )
        self.assertTrue(park_queue(deployed))
        self.assertTrue(function_log_group(deployed))
        self.assertTrue(list(egress_rules(deployed)))
        self.assertTrue(function_security_groups(deployed))


# The defect this check was written for: a Secrets Manager endpoint group given although the stack
# creates that endpoint was taken to serve SQS too, so parking through an existing SQS endpoint had
# no egress rule at all (with or without VpcCidr).
IGNORED_GROUP_TAKEN_FOR_SQS = {
    "DbAuth": "secret", "CreateSecretsManagerEndpoint": "true", "SecretsManagerEndpointSecurityGroupId": SG_A,
    "VpcCidr": "", "ParkOnOutage": "true", "CreateSqsEndpoint": "false", "SqsEndpointSecurityGroupId": "",
}


class EndpointsAreReachable(unittest.TestCase):
    """Every parameter set the Rules accept gives the function a route to each endpoint it needs
    (check_endpoints, part of `findings`); these tests show what it enumerates."""

    @classmethod
    def setUpClass(cls):
        cls.template = load_file(TEMPLATE)
        cls.deployed = translate(cls.template)

    def test_the_enumerated_values_are_valid(self):
        # A value the parameter itself refuses would test a stack nobody can deploy.
        parameters = self.template["Parameters"]
        for values in parameter_sets(self.template):
            for name, value in values.items():
                definition = parameters[name]
                for one in as_list(value):
                    self.assertIn(one, [str(v) for v in definition.get("AllowedValues", [one])], name)
                    self.assertIsNotNone(re.fullmatch(definition.get("AllowedPattern", ".*"), one), f"{name}={one!r}")

    def test_every_accepted_parameter_set_reaches_its_endpoints(self):
        accepted = {mode: 0 for mode in MODE_PARAMETERS}
        total = 0
        for parameters in parameter_sets(self.template):
            total += 1
            stack = Stack(self.deployed, parameters)
            if stack.rejections():
                continue
            accepted[parameters["DbAuth"]] += 1
            with self.subTest(describe(parameters)):
                problems = endpoint_problems(stack)
                self.assertEqual(problems, [], "\n".join(problems))
        self.assertEqual(total, len(MODE_PARAMETERS) * 96)
        for mode, count in accepted.items():  # not vacuous: each mode deploys in some combination
            self.assertGreater(count, 0, mode)

    def test_the_defaults_are_accepted(self):
        for mode in MODE_PARAMETERS:
            stack = Stack(self.deployed, parameter_set(self.template, {"DbAuth": mode}))
            self.assertEqual(stack.rejections(), [], mode)
            self.assertEqual(endpoint_problems(stack), [], mode)

    def test_rds_iam_needs_a_database_name(self):
        # Without a secret nothing names the database: "postgres" would park every user.
        stack = Stack(self.deployed, parameter_set(self.template, {"DbAuth": "rds-iam", "DbName": ""}))
        self.assertEqual([r for r in stack.rejections() if "DbName" in r], [
            "RdsIamHasAResource: DbAuth=rds-iam needs DbName (the database holding public.users; there is no secret to name it)."])
        for mode in ("secret", "dsql-iam"):  # the secret's dbname, DSQL's only database
            stack = Stack(self.deployed, parameter_set(self.template, {"DbAuth": mode, "DbName": ""}))
            self.assertEqual(stack.rejections(), [], mode)

    def test_an_ignored_secrets_manager_group_is_not_taken_for_sqs(self):
        for cidr in ("", VPC_CIDR):
            chosen = {**IGNORED_GROUP_TAKEN_FOR_SQS, "VpcCidr": cidr}
            with self.subTest(VpcCidr=cidr):
                stack = Stack(self.deployed, parameter_set(self.template, chosen))
                sqs = [p for p in endpoint_problems(stack) if "sqs endpoint" in p]
                self.assertTrue(stack.rejections() or not sqs, sqs)

    def test_the_evaluator(self):
        stack = Stack(self.deployed, parameter_set(self.template, {**IGNORED_GROUP_TAKEN_FOR_SQS, "CreateSecretsManagerEndpoint": "false"}))
        self.assertTrue(stack.condition("UsesSecret"))
        self.assertFalse(stack.condition("ShouldCreateSecretsManagerEndpoint"))
        self.assertTrue(stack.condition("HasSecretsManagerEndpointSecurityGroup"))
        egress = stack.function_egress()
        self.assertEqual([r.get("DestinationSecurityGroupId") for r in egress], [BASE_PARAMETERS["ProxySecurityGroupId"], SG_A])
        self.assertEqual(stack.created_endpoint_groups("secretsmanager"), [])
        created = Stack(self.deployed, parameter_set(self.template, {"DbAuth": "secret"}))
        self.assertEqual(created.created_endpoint_groups("secretsmanager"), [{"Fn::GetAtt": ["SecretsManagerEndpointSecurityGroup", "GroupId"]}])
        self.assertEqual(created.created_endpoint_groups("sqs"), [{"Fn::GetAtt": ["SqsEndpointSecurityGroup", "GroupId"]}])


def first(template: dict, resource_type: str) -> dict:
    return next(iter(resources_of(template, resource_type).values()))


def statements_with(template: dict, action: str) -> list[dict]:
    """The statements allowing `action`."""
    return [s for _, s, _, _ in policy_statements(template)
            if s.get("Effect") == "Allow" and action in statement_actions(s)]


class RejectsCarelessEdits(unittest.TestCase):
    """Each mutation of a copy of the real template must produce the expected finding."""

    @classmethod
    def setUpClass(cls):
        cls.text = TEMPLATE.read_text()
        cls.template = load_file(TEMPLATE)

    def mutated(self) -> dict:
        return copy.deepcopy(self.template)

    def assertRejected(self, template: dict, expected: str):
        problems = findings(template)
        self.assertTrue(any(expected in p for p in problems), f"wanted {expected!r} in {problems}")

    # -- IAM --

    def test_secret_resource_replaced_by_star_in_the_yaml(self):
        needle = "Action: secretsmanager:GetSecretValue\n                  Resource: !Ref DbSecretArn"
        self.assertTrue(needle in self.text, "the secret statement is not written as this test expects; update it")
        text = self.text.replace(needle, needle.replace("!Ref DbSecretArn", '"*"'))
        self.assertRejected(load_text(text), "wildcard Resource '*' for secretsmanager:GetSecretValue")

    def test_secret_resource_widened_to_every_secret(self):
        template = self.mutated()
        for statement in statements_with(template, "secretsmanager:GetSecretValue"):
            statement["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:*"}
        self.assertRejected(template, "wildcard Resource")

    def test_secret_parameter_pattern_loosened(self):
        template = self.mutated()
        template["Parameters"]["DbSecretArn"].pop("AllowedPattern")
        self.assertRejected(template, "AllowedPattern must accept only a full secret ARN")

    def test_extra_secrets_manager_action(self):
        template = self.mutated()
        statements_with(template, "secretsmanager:GetSecretValue")[0]["Action"] = [
            "secretsmanager:GetSecretValue", "secretsmanager:ListSecrets"]
        self.assertRejected(template, "only secretsmanager:GetSecretValue may be granted")

    def test_data_plane_action_on_star(self):
        template = self.mutated()
        role = first(template, "AWS::IAM::Role")["Properties"]
        role["Policies"].append({"PolicyName": "oops", "PolicyDocument": {"Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}})
        self.assertRejected(template, "wildcard Resource '*' for s3:GetObject")

    def test_sam_policy_template_with_star_and_generated_role(self):
        template = self.mutated()
        function = first(template, "AWS::Serverless::Function")["Properties"]
        del function["Role"]
        function["Policies"] = [{"AWSSecretsManagerGetSecretValuePolicy": {"SecretArn": "*"}}]
        # The generated role is checked like a hand-written one.
        self.assertRejected(template, "PostConfirmationFunctionRole statement")
        self.assertRejected(template, "wildcard Resource '*' for secretsmanager:GetSecretValue")

    def test_broad_managed_policy(self):
        template = self.mutated()
        first(template, "AWS::IAM::Role")["Properties"]["ManagedPolicyArns"].append(
            {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/SecretsManagerReadWrite"})
        self.assertRejected(template, "managed policy arn:${AWS::Partition}:iam::aws:policy/SecretsManagerReadWrite is not allowed")

    def test_vpc_access_execution_role_re_added(self):
        template = self.mutated()
        first(template, "AWS::IAM::Role")["Properties"]["ManagedPolicyArns"].append(
            {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"})
        self.assertRejected(template, "service-role/AWSLambdaVPCAccessExecutionRole is not allowed")

    def test_eni_policy_swapped_for_the_basic_execution_role(self):
        template = self.mutated()
        first(template, "AWS::IAM::Role")["Properties"]["ManagedPolicyArns"] = [
            {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}]
        self.assertRejected(template, "service-role/AWSLambdaBasicExecutionRole is not allowed")
        self.assertRejected(template, "its role must carry AWSLambdaENIManagementAccess")

    def test_log_resource_replaced_by_star_in_the_yaml(self):
        needle = "- logs:PutLogEvents\n                Resource: !GetAtt FunctionLogGroup.Arn"
        self.assertTrue(needle in self.text, "the log statement is not written as this test expects; update it")
        text = self.text.replace(needle, needle.replace("!GetAtt FunctionLogGroup.Arn", '"*"'))
        self.assertRejected(load_text(text), "wildcard Resource '*' for logs:CreateLogStream, logs:PutLogEvents")
        self.assertRejected(load_text(text), "CloudWatch Logs access must be on the function's log group (FunctionLogGroup) only")

    def test_log_statement_on_another_log_group(self):
        template = self.mutated()
        statements_with(template, "logs:PutLogEvents")[0]["Resource"] = {
            "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/lambda/elsewhere"}
        self.assertRejected(template, "CloudWatch Logs access must be on the function's log group (FunctionLogGroup) only")
        self.assertRejected(template, "its role must allow ['logs:CreateLogStream', 'logs:PutLogEvents'] on its log group")

    def test_log_group_creation_granted(self):
        template = self.mutated()
        statements_with(template, "logs:PutLogEvents")[0]["Action"].append("logs:CreateLogGroup")
        self.assertRejected(template, "logs:CreateLogGroup must not be granted")

    def test_log_statement_removed(self):
        template = self.mutated()
        policies = first(template, "AWS::IAM::Role")["Properties"]["Policies"]
        policies[:] = [p for p in policies if not (isinstance(p, dict) and p.get("PolicyName") == "write-the-function-logs")]
        self.assertRejected(template, "its role must allow ['logs:CreateLogStream', 'logs:PutLogEvents'] on its log group")

    def test_eni_action_granted_inline_on_star(self):
        template = self.mutated()
        statements_with(template, "ec2:DescribeSubnets")[0]["Action"] = ["ec2:DescribeSubnets", "ec2:DeleteNetworkInterface"]
        self.assertRejected(template, "wildcard Resource '*' for ec2:DeleteNetworkInterface")
        self.assertRejected(template, "may be granted on EC2 here")

    def test_kms_decrypt_granted_unconditionally(self):
        template = self.mutated()
        policies = first(template, "AWS::IAM::Role")["Properties"]["Policies"]
        conditional = next(p for p in policies if isinstance(p, dict) and p.get("Fn::If", [None])[0] == "HasDbSecretKmsKey")
        policies[policies.index(conditional)] = conditional["Fn::If"][1]
        self.assertRejected(template, "must exist only under the condition")

    def test_kms_decrypt_without_via_service(self):
        template = self.mutated()
        statement = statements_with(template, "kms:Decrypt")[0]
        del statement["Condition"]["StringEquals"]["kms:ViaService"]
        self.assertRejected(template, "kms:ViaService condition")

    def test_kms_decrypt_on_every_key(self):
        template = self.mutated()
        statements_with(template, "kms:Decrypt")[0]["Resource"] = "*"
        self.assertRejected(template, "wildcard Resource '*' for kms:Decrypt")

    # -- network --

    def test_subnet_parameter_removed(self):
        template = self.mutated()
        del template["Parameters"]["PrivateSubnetIds"]
        function = first(template, "AWS::Serverless::Function")["Properties"]
        function["VpcConfig"]["SubnetIds"] = ["subnet-0123456789abcdef0"]
        for resource in template["Resources"].values():  # other users of the parameter
            if resource.get("Properties", {}).get("SubnetIds") == {"Ref": "PrivateSubnetIds"}:
                resource["Properties"]["SubnetIds"] = ["subnet-0123456789abcdef0"]
        self.assertRejected(template, "SubnetIds must be a parameter of type List<AWS::EC2::Subnet::Id>")

    def test_subnet_parameter_loosely_typed(self):
        template = self.mutated()
        template["Parameters"]["PrivateSubnetIds"]["Type"] = "CommaDelimitedList"
        self.assertRejected(template, "SubnetIds must be a parameter of type List<AWS::EC2::Subnet::Id>")

    def test_vpc_config_removed(self):
        template = self.mutated()
        del first(template, "AWS::Serverless::Function")["Properties"]["VpcConfig"]
        self.assertRejected(template, "VpcConfig missing")

    def test_egress_to_the_internet_on_all_ports(self):
        template = self.mutated()
        group = template["Resources"]["FunctionSecurityGroup"]["Properties"]
        group["SecurityGroupEgress"].append({"IpProtocol": "-1", "CidrIp": "0.0.0.0/0"})
        self.assertRejected(template, "egress to the whole internet")
        self.assertRejected(template, "egress on all protocols and ports")

    def test_default_egress_left_in_place(self):
        template = self.mutated()
        del template["Resources"]["FunctionSecurityGroup"]["Properties"]["SecurityGroupEgress"]
        self.assertRejected(template, "default allow-all egress rule stays")

    def test_database_egress_to_a_cidr(self):
        template = self.mutated()
        rule = template["Resources"]["FunctionSecurityGroup"]["Properties"]["SecurityGroupEgress"][0]
        del rule["DestinationSecurityGroupId"]
        rule["CidrIp"] = "10.0.0.0/8"
        self.assertRejected(template, "database egress must go to the proxy's security group")

    def test_port_range_egress(self):
        template = self.mutated()
        template["Resources"]["FunctionSecurityGroup"]["Properties"]["SecurityGroupEgress"].append(
            {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "CidrIp": "10.0.0.0/16"})
        self.assertRejected(template, "egress on a port range 0-65535")

    # -- Cognito --

    def test_permission_for_any_principal(self):
        template = self.mutated()
        first(template, "AWS::Lambda::Permission")["Properties"]["Principal"] = "*"
        self.assertRejected(template, "Principal must be cognito-idp.amazonaws.com")

    def test_permission_without_source_arn(self):
        template = self.mutated()
        del first(template, "AWS::Lambda::Permission")["Properties"]["SourceArn"]
        self.assertRejected(template, "a service principal without SourceArn")

    def test_permission_source_arn_wildcard(self):
        template = self.mutated()
        first(template, "AWS::Lambda::Permission")["Properties"]["SourceArn"] = {
            "Fn::Sub": "arn:aws:cognito-idp:${AWS::Region}:${AWS::AccountId}:userpool/*"}
        self.assertRejected(template, "SourceArn")

    def test_permission_without_source_account(self):
        template = self.mutated()
        del first(template, "AWS::Lambda::Permission")["Properties"]["SourceAccount"]
        self.assertRejected(template, "SourceAccount must be this account")

    # -- build and runtime --

    def test_binary_not_pinned(self):
        template = self.mutated()
        del first(template, "AWS::Serverless::Function")["Metadata"]["BuildProperties"]
        self.assertRejected(template, "Binary must be")

    def test_architecture_defaulting_to_x86(self):
        template = self.mutated()
        template["Parameters"]["Architecture"]["Default"] = "x86_64"
        self.assertRejected(template, "Architectures must be [arm64], or a parameter defaulting to arm64")

    def test_architecture_literal_x86(self):
        template = self.mutated()
        first(template, "AWS::Serverless::Function")["Properties"]["Architectures"] = ["x86_64"]
        self.assertRejected(template, "Architectures must be [arm64]")

    def test_a_variable_the_function_reads_is_not_declared(self):
        template = self.mutated()
        del first(template, "AWS::Serverless::Function")["Properties"]["Environment"]["Variables"]["AWS_ENDPOINT_URL_SECRETS_MANAGER"]
        self.assertRejected(template, "AWS_ENDPOINT_URL_SECRETS_MANAGER is not declared")

    def test_a_local_only_variable_set_in_the_template(self):
        template = self.mutated()
        variables = first(template, "AWS::Serverless::Function")["Properties"]["Environment"]["Variables"]
        variables["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = "http://127.0.0.1:5000"
        self.assertRejected(template, "AWS_ENDPOINT_URL_SECRETS_MANAGER must be empty in the template")

    def test_statement_cap_above_the_roles_statement_timeout(self):
        template = self.mutated()
        template["Parameters"]["DbStatementTimeoutMs"]["MaxValue"] = 4000
        self.assertRejected(template, "may exceed the role's statement_timeout")

    def test_caps_that_together_outlast_the_timeout(self):
        template = self.mutated()
        template["Parameters"]["DbConnectTimeoutMs"]["MaxValue"] = 2500
        self.assertRejected(template, "may outlast the 4 s Timeout")

    # -- database login modes --

    def conditional_policy(self, template: dict, condition: str) -> tuple[list, int]:
        policies = first(template, "AWS::IAM::Role")["Properties"]["Policies"]
        index = next(i for i, p in enumerate(policies) if isinstance(p, dict) and p.get("Fn::If", [None])[0] == condition)
        return policies, index

    def test_secret_read_in_every_mode(self):
        template = self.mutated()
        policies, index = self.conditional_policy(template, "UsesSecret")
        policies[index] = policies[index]["Fn::If"][1]
        self.assertRejected(template, "Secrets Manager access must exist only when DbAuth=secret")

    def test_secrets_manager_endpoint_in_iam_modes(self):
        template = self.mutated()
        template["Conditions"]["ShouldCreateSecretsManagerEndpoint"] = {"Fn::Equals": [{"Ref": "CreateSecretsManagerEndpoint"}, "true"]}
        self.assertRejected(template, "SecretsManagerEndpoint statement ReadTheDatabaseSecretOnly: Secrets Manager access must exist only when DbAuth=secret")

    def test_rds_db_connect_as_any_user(self):
        template = self.mutated()
        statements_with(template, "rds-db:connect")[0]["Resource"] = {
            "Fn::Sub": "arn:${AWS::Partition}:rds-db:${AWS::Region}:${AWS::AccountId}:dbuser:${DbResourceId}/*"}
        self.assertRejected(template, "rds-db:connect must be on dbuser:${DbResourceId}/${DbUser} only")

    def test_rds_db_connect_in_every_mode(self):
        template = self.mutated()
        policies, index = self.conditional_policy(template, "UsesRdsIam")
        policies[index] = policies[index]["Fn::If"][1]
        self.assertRejected(template, "rds-db:connect must exist only when DbAuth=rds-iam")

    def test_dsql_connect_on_every_cluster(self):
        template = self.mutated()
        statements_with(template, "dsql:DbConnect")[0]["Resource"] = {
            "Fn::Sub": "arn:${AWS::Partition}:dsql:${AWS::Region}:${AWS::AccountId}:cluster/*"}
        self.assertRejected(template, "wildcard Resource")
        self.assertRejected(template, "must be on cluster/${DsqlClusterId} only")

    def test_dsql_connect_in_every_mode(self):
        template = self.mutated()
        policies, index = self.conditional_policy(template, "UsesDsqlIam")
        policies[index] = policies[index]["Fn::If"][1]
        self.assertRejected(template, "the DSQL connect action must exist only when DbAuth=dsql-iam")

    # -- parking --

    def test_park_queue_unencrypted(self):
        template = self.mutated()
        template["Resources"]["ParkQueue"]["Properties"].pop("SqsManagedSseEnabled")
        self.assertRejected(template, "ParkQueue: not encrypted")

    def test_park_queue_deleted_with_the_stack(self):
        template = self.mutated()
        template["Resources"]["ParkDeadLetterQueue"]["DeletionPolicy"] = "Delete"
        self.assertRejected(template, "ParkDeadLetterQueue: DeletionPolicy must be Retain")

    def test_messages_expire_before_reaching_the_dead_letter_queue(self):
        template = self.mutated()
        template["Resources"]["ParkQueue"]["Properties"]["MessageRetentionPeriod"] = 3600
        self.assertRejected(template, "before 24 receives 300 s apart")

    def test_queue_policy_deleted_with_the_stack(self):
        template = self.mutated()
        template["Resources"]["ParkQueuesTlsOnly"].pop("DeletionPolicy")
        self.assertRejected(template, "ParkQueuesTlsOnly: DeletionPolicy must be Retain")

    def test_dead_letter_queue_keeps_less_than_the_park_queue(self):
        template = self.mutated()
        template["Resources"]["ParkDeadLetterQueue"]["Properties"]["MessageRetentionPeriod"] = 86400
        self.assertRejected(template, "ParkDeadLetterQueue: MessageRetentionPeriod must exceed")

    def test_no_dead_letter_queue(self):
        template = self.mutated()
        template["Resources"]["ParkQueue"]["Properties"].pop("RedrivePolicy")
        self.assertRejected(template, "RedrivePolicy must send to a dead-letter queue")

    def test_queue_policy_allowing_plain_http(self):
        template = self.mutated()
        template["Resources"]["ParkQueuesTlsOnly"]["Properties"]["PolicyDocument"]["Statement"][0]["Resource"] = [
            {"Fn::GetAtt": ["ParkQueue", "Arn"]}]
        self.assertRejected(template, "ParkDeadLetterQueue: no queue policy denying requests without TLS")

    def test_replay_without_partial_batch_responses(self):
        template = self.mutated()
        template["Resources"]["ParkQueueReplay"]["Properties"].pop("FunctionResponseTypes")
        self.assertRejected(template, "partial batch responses")

    def test_sqs_send_on_every_queue(self):
        template = self.mutated()
        statements_with(template, "sqs:SendMessage")[0]["Resource"] = {
            "Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:*"}
        self.assertRejected(template, "SQS access must be on the park queue only")

    def test_sqs_purge_granted(self):
        template = self.mutated()
        statements_with(template, "sqs:DeleteMessage")[0]["Action"].append("sqs:PurgeQueue")
        self.assertRejected(template, "may be granted on SQS")

    def test_park_queue_url_not_this_templates_queue(self):
        template = self.mutated()
        variables = first(template, "AWS::Serverless::Function")["Properties"]["Environment"]["Variables"]
        variables["PARK_QUEUE_URL"] = "https://sqs.us-east-1.amazonaws.com/111122223333/elsewhere"
        self.assertRejected(template, "PARK_QUEUE_URL must name this template's park queue")

    def test_the_code_may_read_and_delete_parked_users(self):
        template = self.mutated()
        policies = template["Resources"]["PostConfirmationRole"]["Properties"]["Policies"]
        policies[:] = [p for p in policies if not (isinstance(p, dict) and p.get("PolicyName") == "deny-the-code-what-lambda-does-for-it")]
        self.assertRejected(template, "the function's code is not denied ['ec2:*', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:ReceiveMessage']")

    def test_the_code_denied_what_it_needs(self):
        template = self.mutated()
        policies = template["Resources"]["PostConfirmationRole"]["Properties"]["Policies"]
        deny = next(p for p in policies if isinstance(p, dict) and p.get("PolicyName") == "deny-the-code-what-lambda-does-for-it")
        deny["PolicyDocument"]["Statement"][0]["Action"] = ["ec2:*", "SQS:*"]
        self.assertRejected(template, "a Deny covers sqs:SendMessage, which the function needs")

    def test_anyone_may_send_to_the_park_queue(self):
        template = self.mutated()
        statements = template["Resources"]["ParkQueuesTlsOnly"]["Properties"]["PolicyDocument"]["Statement"]
        statements[:] = [s for s in statements if s.get("Sid") != "OnlyTheFunctionParks"]
        self.assertRejected(template, "no queue policy denying SendMessage to all but the function's role")

    # -- reaching the endpoints (check_endpoints) --

    def test_ignored_secrets_manager_group_taken_for_sqs(self):
        # The fix reverted: a Secrets Manager endpoint group given with CreateSecretsManagerEndpoint=true
        # passes the rules again, and the SQS egress then goes nowhere.
        template = self.mutated()
        rule = "SecretsManagerEndpointGroupOnlyForAnExistingEndpoint"
        self.assertIn(rule, template["Rules"], "the rule is not named as this test expects; update it")
        del template["Rules"][rule]
        groups = f"CreateSecretsManagerEndpoint='true' SecretsManagerEndpointSecurityGroupId='{SG_A}'"
        self.assertRejected(template, f"{groups} VpcCidr='' ParkOnOutage='true' CreateSqsEndpoint='false' "
                            "SqsEndpointSecurityGroupId='': the Rules accept a set in which nothing says how to reach the sqs endpoint")
        self.assertRejected(template, f"{groups} VpcCidr='{VPC_CIDR}' ParkOnOutage='true' CreateSqsEndpoint='false' "
                            f"SqsEndpointSecurityGroupId='': no HTTPS egress to the sqs endpoint (want CidrIp \"{VPC_CIDR}\")")

    def test_sqs_group_given_but_ignored(self):
        template = self.mutated()
        del template["Rules"]["SqsEndpointGroupOnlyForAnExistingEndpoint"]
        self.assertRejected(template, "SqsEndpointSecurityGroupId is given but unused")

    def test_one_group_given_for_both_endpoints_twice(self):
        template = self.mutated()
        template["Rules"]["SqsReachable"]["Assertions"].pop(1)
        self.assertRejected(template, "duplicate egress rule (AWS rejects it)")

    def test_sqs_egress_to_the_vpc_cidr_twice(self):
        template = self.mutated()
        needs = template["Conditions"]["NeedsSqsEgressToVpcCidr"]["Fn::And"]
        needs.remove({"Fn::Not": [{"Condition": "SecretsManagerEgressToVpcCidr"}]})
        self.assertRejected(template, f'duplicate egress rule (AWS rejects it): {{"CidrIp": "{VPC_CIDR}"')

    def test_existing_sqs_endpoint_with_no_way_to_it(self):
        template = self.mutated()
        template["Rules"]["SqsReachable"]["Assertions"].pop(0)
        self.assertRejected(template, "egress rule with an empty CidrIp")
        self.assertRejected(template, "the Rules accept a set in which nothing says how to reach the sqs endpoint")

    def test_secrets_manager_egress_in_iam_modes(self):
        template = self.mutated()
        template["Conditions"]["SecretsManagerThroughVpcCidr"] = {"Fn::Not": [{"Fn::Equals": [{"Ref": "VpcCidr"}, ""]}]}
        unused = parameter_set(template, {"DbAuth": "rds-iam", "VpcCidr": VPC_CIDR, "ParkOnOutage": "false"})
        self.assertRejected(template, f"{describe(unused)}: HTTPS egress no endpoint needs")

    def test_sqs_endpoint_not_created(self):
        template = self.mutated()
        template["Conditions"]["ShouldCreateSqsEndpoint"] = {"Fn::Equals": ["true", "false"]}
        self.assertRejected(template, "CreateSqsEndpoint=true but the stack creates no sqs endpoint")

    def test_fatal_logging_allowed(self):
        template = self.mutated()
        template["Parameters"]["LogLevel"]["AllowedValues"].append("FATAL")
        self.assertRejected(template, "must not allow FATAL")

    def test_trace_logging_allowed(self):
        template = self.mutated()
        template["Parameters"]["LogLevel"]["AllowedValues"].insert(0, "TRACE")
        self.assertRejected(template, "does not allow TRACE")

    def test_statement_cap_that_leaves_no_time_to_park(self):
        template = self.mutated()
        template["Parameters"]["DbStatementTimeoutMs"]["MaxValue"] = 2000
        self.assertRejected(template, "plus the margin and parking may outlast the 4 s Timeout")

    def test_dead_letter_alarm_removed(self):
        template = self.mutated()
        del template["Resources"]["ParkDeadLetterAlarm"]
        self.assertRejected(template, "no alarm on AWS/SQS ApproximateNumberOfMessagesVisible of ParkDeadLetterQueue")

    def test_dead_letter_alarm_that_clears_when_the_idle_queue_stops_reporting(self):
        template = self.mutated()
        template["Resources"]["ParkDeadLetterAlarm"]["Properties"]["TreatMissingData"] = "notBreaching"
        self.assertRejected(template, "the dead-letter alarm must ignore missing data")

    def test_parked_users_alarm_on_the_oldest_message_age(self):
        template = self.mutated()
        alarm = template["Resources"]["ParkedUsersWaitingAlarm"]["Properties"]
        for key in ("Metrics", "DatapointsToAlarm"):
            del alarm[key]
        alarm.update({
            "Namespace": "AWS/SQS", "MetricName": "ApproximateAgeOfOldestMessage",
            "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["ParkQueue", "QueueName"]}}],
            "Statistic": "Maximum", "Period": 300, "EvaluationPeriods": 1, "Threshold": 900,
        })
        self.assertRejected(template, "no alarm on AWS/SQS ApproximateNumberOfMessagesNotVisible of ParkQueue")
        self.assertRejected(template, "so a failing replay never reaches its threshold")

    def test_parked_users_alarm_that_returns_the_visible_count_only(self):
        template = self.mutated()
        metrics = template["Resources"]["ParkedUsersWaitingAlarm"]["Properties"]["Metrics"]
        next(m for m in metrics if m["Id"] == "waiting")["Expression"] = "FILL(visible, 0)"
        self.assertRejected(template, "must return one expression adding the park queue's visible and in-flight")

    def test_parked_users_alarm_blind_to_messages_in_flight(self):
        template = self.mutated()
        metrics = template["Resources"]["ParkedUsersWaitingAlarm"]["Properties"]["Metrics"]
        metrics[:] = [m for m in metrics if m["Id"] != "inflight"]
        self.assertRejected(template, "no alarm on AWS/SQS ApproximateNumberOfMessagesNotVisible of ParkQueue")

    def test_duration_alarm_at_the_timeout(self):
        template = self.mutated()
        template["Resources"]["FunctionDurationAlarm"]["Properties"]["Threshold"] = 4000
        self.assertRejected(template, "Duration alarm's threshold must be under the 4000 ms Timeout")

    def test_timeout_beyond_cognito_budget(self):
        template = self.mutated()
        first(template, "AWS::Serverless::Function")["Properties"]["Timeout"] = 30
        self.assertRejected(template, "Timeout must be a literal <= 5")


if __name__ == "__main__":
    unittest.main()
