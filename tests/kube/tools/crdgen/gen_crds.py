#!/usr/bin/env python3
"""Writes crds/{gateway,virtualservice,destinationrule,serviceentry}.yaml.

The OpenAPI schemas of networking.istio.io Gateway, VirtualService, DestinationRule and
ServiceEntry, written from the field lists of Istio's API (networking/v1alpha3/*.proto). Each CRD serves
v1 (storage), v1beta1 and v1alpha3 with one identical schema, so it is written once here
and repeated per version. Re-run after editing:  python3 tests/kube/tools/crdgen/gen_crds.py
(needs PyYAML; the generated files are committed, nothing at build or test time runs this).
"""
import copy
import os
import sys

import yaml

GROUP = "networking.istio.io"
VERSIONS = ["v1", "v1beta1", "v1alpha3"]
STORAGE = "v1"



# --- small helpers -------------------------------------------------------------------
def d(desc, schema):
    s = {"description": desc}
    s.update(schema)
    return s


def string(desc, **kw):
    return d(desc, dict(type="string", **kw))


def boolean(desc):
    return d(desc, {"type": "boolean"})


def int32(desc, **kw):
    return d(desc, dict(type="integer", format="int32", **kw))


def uint32(desc, **kw):
    kw.setdefault("minimum", 0)
    kw.setdefault("maximum", 4294967295)
    return d(desc, dict(type="integer", **kw))


def uint64(desc):
    return d(desc, {"type": "integer", "minimum": 0})


def number(desc, **kw):
    return d(desc, dict(type="number", format="double", **kw))


def duration(desc, at_least_1ms=False):
    # Durations are strings; where Istio's own CRDs check one with CEL (at least 1ms), so
    # does this one, with Istio's message: the API server answers it before it calls the
    # validating webhook. The others are left to the webhook, as Istio does.
    s = d(desc, {"type": "string"})
    if at_least_1ms:
        s["x-kubernetes-validations"] = [{"rule": "duration(self) >= duration('1ms')",
                                          "message": "must be a valid duration greater than 1ms"}]
    return s


def min_duration(desc):
    return duration(desc, at_least_1ms=True)


def strings(desc, **kw):
    return d(desc, dict(type="array", items={"type": "string"}, **kw))


def string_map(desc, **kw):
    return d(desc, dict(type="object", additionalProperties={"type": "string"}, **kw))


def obj(desc, props, required=None, **kw):
    s = {"description": desc, "type": "object", "properties": props}
    if required:
        s["required"] = list(required)
    s.update(kw)
    return s


def array(desc, items, **kw):
    return d(desc, dict(type="array", items=items, **kw))


def enum(desc, values):
    return d(desc, {"type": "string", "enum": list(values)})


def at_most_one_of(*fields):
    """A proto oneof: none or exactly one of the fields (as Istio's own CRDs express it)."""
    return {"oneOf": [{"not": {"anyOf": [{"required": [f]} for f in fields]}}]
            + [{"required": [f]} for f in fields]}


def with_oneof(schema, *fields):
    s = copy.deepcopy(schema)
    s.update(at_most_one_of(*fields))
    return s


def port_number(desc):
    return d(desc, {"type": "integer", "minimum": 1, "maximum": 65535})


def percent(desc):
    return obj(desc, {"value": number("A percentage from 0 to 100; fractions allowed.",
                                      minimum=0, maximum=100)})


# --- shared messages -----------------------------------------------------------------
def string_match(desc):
    return with_oneof(obj(desc, {
        "exact": string("Matches when the value equals this string."),
        "prefix": string("Matches when the value starts with this string."),
        "regex": string("Matches when the whole value matches this RE2 regular expression."),
    }), "exact", "prefix", "regex")


def string_match_map(desc):
    return d(desc, {"type": "object",
                    "additionalProperties": string_match("At most one of exact, prefix or regex.")})


def destination(desc):
    return obj(desc, {
        "host": string("Service host name; a short name (reviews) is taken relative to the "
                       "rule's namespace (reviews.<ns>.svc.cluster.local)."),
        "subset": string("Subset name, declared by a DestinationRule for the host."),
        "port": obj("Port of the destination service; needed when it exposes several.", {
            "number": port_number("Port number, 1-65535."),
        }),
    }, required=["host"])


def header_operations(desc):
    return obj(desc, {
        "set": string_map("Headers to set, replacing any existing value."),
        "add": string_map("Headers to append a value to."),
        "remove": strings("Names of headers to drop."),
    })


def headers(desc):
    return obj(desc, {
        "request": header_operations("Changes made to the request before it goes upstream."),
        "response": header_operations("Changes made to the response before it goes downstream."),
    })


def workload_selector(desc):
    labels = string_map("Labels a workload must carry (all of them) to be selected.",
                        maxProperties=4096)
    labels["additionalProperties"].update({
        "maxLength": 63,
        "x-kubernetes-validations": [{"rule": '!self.contains("*")',
                                      "message": "wildcard not allowed in label value match"}],
    })
    labels["x-kubernetes-validations"] = [
        {"rule": 'self.all(key, !key.contains("*"))',
         "message": "wildcard not allowed in label key match"},
        {"rule": "self.all(key, key.size() != 0)", "message": "key must not be empty"},
    ]
    return obj(desc, {"matchLabels": labels})


# --- Gateway ---------------------------------------------------------------------------
def server_tls():
    tls_cert = obj("One certificate chain with its key.", {
        "serverCertificate": string("File with the certificate chain."),
        "privateKey": string("File with the private key."),
        "caCertificates": string("File with CA certificates for verifying clients."),
    })
    protocols = ["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]
    tls = obj("TLS settings of this server.", {
        "httpsRedirect": boolean("Answer plain-HTTP requests with a 301 redirect to https."),
        "mode": enum("How TLS is handled on this port.",
                     ["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL",
                      "OPTIONAL_MUTUAL"]),
        "serverCertificate": string("File with the server certificate chain (file-mounted certs)."),
        "privateKey": string("File with the server private key (file-mounted certs)."),
        "caCertificates": string("File with CA certificates used to verify client certificates."),
        "caCrl": string("File with a certificate revocation list for client certificates."),
        "credentialName": string("Secret holding the certificate, key and optionally the CA bundle."),
        "credentialNames": strings("Up to two Secrets (e.g. one RSA, one ECDSA certificate).",
                                   minItems=1, maxItems=2),
        "caCertCredentialName": string("Secret holding only the CA bundle for client verification."),
        "tlsCertificates": array("Up to two file-based certificate/key pairs (e.g. RSA and ECDSA).",
                                 tls_cert, minItems=1, maxItems=2),
        "subjectAltNames": strings("Accepted subject alternative names of client certificates."),
        "verifyCertificateSpki": strings("Accepted client certificates by base64 SHA-256 SPKI hash."),
        "verifyCertificateHash": strings("Accepted client certificates by hex SHA-256 hash."),
        "minProtocolVersion": enum("Lowest TLS version accepted.", protocols),
        "maxProtocolVersion": enum("Highest TLS version accepted.", protocols),
        "cipherSuites": strings("Allowed cipher suites; empty means the proxy's defaults."),
        "ecdhCurves": strings("Allowed ECDH curves (key exchange groups), e.g. X25519, P-256; "
                              "empty means the proxy's defaults."),
        "insecureSkipVerify": boolean("Do not verify client certificates."),
    })
    tls["x-kubernetes-validations"] = [
        {"rule": "!(has(self.tlsCertificates) && has(self.credentialNames))",
         "message": "only one of credentialNames or tlsCertificates can be set"},
        {"rule": "!(has(self.credentialName) && has(self.credentialNames))",
         "message": "only one of credentialName or credentialNames can be set"},
        {"rule": "!(has(self.credentialName) && has(self.tlsCertificates))",
         "message": "only one of credentialName or tlsCertificates can be set"},
    ]
    return tls


def gateway_spec():
    server = obj("One listening port of the gateway and the hosts it accepts.", {
        "port": obj("Where the gateway listens.", {
            "number": port_number("Port number, 1-65535."),
            "protocol": string("HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP or TLS."),
            "name": string("Name of the port."),
            "targetPort": uint32("Deprecated; not used for gateways."),
        }, required=["number", "protocol", "name"]),
        "bind": string("IP address or unix socket to listen on instead of all addresses."),
        "hosts": strings("Hosts served on this port: 'host', '*.example.com', '*', each "
                         "optionally prefixed with 'namespace/', './' or '*/' to limit which "
                         "namespaces' VirtualServices may bind.", minItems=1),
        "tls": server_tls(),
        "defaultEndpoint": string("Loopback address or unix socket that traffic goes to by default "
                                  "(sidecar ingress only)."),
        "name": string("Optional name, unique among the gateway's servers."),
    }, required=["port", "hosts"])
    return obj("An edge (ingress/egress) proxy configuration: which ports it opens and which "
               "hosts it accepts on each; routing comes from VirtualServices bound to it. "
               "Istio reference: https://istio.io/latest/docs/reference/config/networking/gateway/", {
        "servers": array("The ports the gateway listens on.", server),
        "selector": string_map("Labels of the gateway proxy pods this configuration applies to "
                               "(e.g. istio: ingressgateway).", maxProperties=256),
    })


# --- VirtualService --------------------------------------------------------------------
def http_match():
    return obj("One match block; all conditions in it must hold. Blocks of a route are ORed.", {
        "name": string("Name of the match block, appended to the route name in logs/stats."),
        "uri": string_match("Condition on the request path (case-sensitive unless ignoreUriCase)."),
        "scheme": string_match("Condition on the URI scheme."),
        "method": string_match("Condition on the HTTP method."),
        "authority": string_match("Condition on the Host / :authority header."),
        "headers": string_match_map("Conditions on request headers, keyed by lowercase header name."),
        "port": port_number("Only traffic addressed to this port."),
        "sourceLabels": string_map("Only traffic from workloads carrying these labels."),
        "gateways": strings("Only traffic through these gateways (overrides the VirtualService's list)."),
        "queryParams": string_match_map("Conditions on query parameters, keyed by name."),
        "ignoreUriCase": boolean("Compare the uri condition case-insensitively."),
        "withoutHeaders": string_match_map("Headers that must NOT match (negated header conditions)."),
        "sourceNamespace": string("Only traffic from workloads in this namespace."),
        "statPrefix": string("Prefix for the statistics of this route."),
    })


def http_route():
    redirect = with_oneof(obj("Answer with an HTTP redirect instead of forwarding.", {
        "uri": string("Replace the path with this value."),
        "authority": string("Replace the host with this value."),
        "port": port_number("Replace the port with this value."),
        "derivePort": enum("Take the port from the protocol default or the incoming request.",
                           ["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"]),
        "scheme": string("Replace the scheme with this value."),
        "redirectCode": uint32("Status code of the redirect (default 301).", minimum=300, maximum=399),
        "prefixRewrite": string("Replace the matched uri prefix with this value."),
    }), "port", "derivePort")
    direct_response = obj("Answer directly with a fixed status and body instead of forwarding.", {
        "status": uint32("HTTP status code to return.", minimum=200, maximum=599),
        "body": with_oneof(obj("Response body, as text or as base64 bytes.", {
            "string": string("Body text."),
            "bytes": string("Body bytes, base64 encoded.", format="byte"),
        }), "string", "bytes"),
    }, required=["status"])
    delay = with_oneof(obj("Delay a share of requests before forwarding them.", {
        "percent": int32("Deprecated integer share; use percentage.", minimum=0, maximum=100),
        "fixedDelay": min_duration("How long to delay, e.g. 5s."),
        "exponentialDelay": min_duration("Exponential delay (accepted, not implemented by Istio)."),
        "percentage": percent("Share of requests delayed; absent means all."),
    }), "fixedDelay", "exponentialDelay")
    abort = with_oneof(obj("Fail a share of requests without forwarding them.", {
        "httpStatus": int32("HTTP status code to answer with (Istio accepts 200-600).",
                            minimum=200, maximum=600),
        "grpcStatus": string("gRPC status to answer with, e.g. UNAVAILABLE."),
        "http2Error": string("HTTP/2 error (accepted, not implemented by Istio)."),
        "percentage": percent("Share of requests aborted; absent means all."),
    }), "httpStatus", "grpcStatus", "http2Error")
    route = obj("An HTTP route rule: match conditions and what to do with matching requests "
                "(forward, redirect, answer directly or delegate). Rules are tried in order.", {
        "name": string("Route name, shown in logs and statistics."),
        "match": array("Match blocks; the rule applies if any block matches (no blocks: always).",
                       http_match()),
        "route": array("Weighted destinations to forward to.", obj("A weighted destination.", {
            "destination": destination("Where to send the request."),
            "weight": int32("Relative share of traffic (weights need not sum to 100).", minimum=0,
                            maximum=2147483647),
            "headers": headers("Header changes for traffic to this destination."),
        }, required=["destination"])),
        "redirect": redirect,
        "directResponse": direct_response,
        "delegate": obj("Hand routing over to another VirtualService (one without hosts).", {
            "name": string("Name of the delegate VirtualService."),
            "namespace": string("Its namespace; defaults to this one."),
        }),
        "rewrite": obj("Rewrite the request before forwarding.", {
            "uri": string("Replace the matched path prefix (or the whole path) with this value."),
            "authority": string("Replace the Host / :authority header with this value."),
            "uriRegexRewrite": obj("Rewrite the path with a regular expression.", {
                "match": string("RE2 expression to find in the path."),
                "rewrite": string("Replacement; may use capture groups such as \\1."),
            }),
        }),
        "timeout": min_duration("Overall timeout of the request, all retries included; unset means none."),
        "retries": obj("Retry policy.", {
            "attempts": int32("Number of retries after the first try.", minimum=0),
            "perTryTimeout": min_duration("Timeout of each try."),
            "retryOn": string("Comma-separated retry conditions (5xx, gateway-error, reset, "
                              "connect-failure, refused-stream, retriable-4xx, "
                              "retriable-status-codes, gRPC codes) and bare status codes."),
            "retryRemoteLocalities": boolean("Allow retries to go to other localities."),
            "retryIgnorePreviousHosts": boolean("Prefer hosts not tried before when retrying."),
            "backoff": min_duration("Minimum wait between retries."),
        }),
        "fault": obj("Faults to inject into matching traffic.", {
            "delay": delay,
            "abort": abort,
        }),
        "mirror": destination("Send a copy of each request here as well (responses ignored)."),
        "mirrors": array("Several mirror destinations, each with its own share.",
                         obj("A mirror destination.", {
                             "destination": destination("Where copies are sent."),
                             "percentage": percent("Share of requests copied; absent means all."),
                         }, required=["destination"])),
        "mirrorPercent": uint32("Deprecated integer share for mirror; use mirrorPercentage.",
                                maximum=100),
        "mirror_percent": uint32("The same as mirrorPercent (Istio's API takes its proto name too).",
                                 maximum=100),
        "mirrorPercentage": percent("Share of requests copied to mirror; absent means all."),
        "corsPolicy": obj("CORS policy answered by the proxy.", {
            "allowOrigin": strings("Deprecated; use allowOrigins."),
            "allowOrigins": array("Allowed origins.", string_match("At most one of exact, prefix or regex.")),
            "allowMethods": strings("Access-Control-Allow-Methods."),
            "allowHeaders": strings("Access-Control-Allow-Headers."),
            "exposeHeaders": strings("Access-Control-Expose-Headers."),
            "maxAge": min_duration("Access-Control-Max-Age."),
            "allowCredentials": boolean("Access-Control-Allow-Credentials."),
            "unmatchedPreflights": enum("What to do with preflight requests from origins that are not "
                                        "allowed: forward them upstream or ignore them.",
                                        ["UNSPECIFIED", "FORWARD", "IGNORE"]),
        }),
        "headers": headers("Header changes for all destinations of this rule."),
    })
    route["x-kubernetes-validations"] = [
        {"rule": "!(has(self.redirect) && has(self.route))",
         "message": "redirect and route are mutually exclusive"},
        {"rule": "!(has(self.directResponse) && has(self.route))",
         "message": "directResponse and route are mutually exclusive"},
        {"rule": "!(has(self.directResponse) && has(self.redirect))",
         "message": "directResponse and redirect are mutually exclusive"},
        {"rule": "!(has(self.mirror) && has(self.mirrors))",
         "message": "mirror and mirrors are mutually exclusive"},
    ]
    return route


def route_destination():
    return obj("A weighted destination for TCP/TLS traffic.", {
        "destination": destination("Where to send the connection."),
        "weight": int32("Relative share of connections (weights need not sum to 100).",
                        minimum=0, maximum=2147483647),
    }, required=["destination"])


def l4_common():
    return {
        "destinationSubnets": strings("Only connections to these IPs / CIDRs."),
        "port": port_number("Only connections to this port."),
        "sourceLabels": string_map("Only connections from workloads carrying these labels."),
        "gateways": strings("Only connections through these gateways."),
        "sourceNamespace": string("Only connections from workloads in this namespace."),
    }


def virtual_service_spec():
    tls_match = {"sniHosts": strings("SNI names to match; wildcards allowed.", minItems=1),
                 **l4_common()}
    tcp_match = dict(l4_common())
    tcp_match["sourceSubnet"] = string("Only connections from this IP / CIDR.")
    return obj("Routing rules for a set of hosts: ordered HTTP, TLS (by SNI) and TCP rules. "
               "Istio reference: "
               "https://istio.io/latest/docs/reference/config/networking/virtual-service/", {
        "hosts": strings("Hosts these rules apply to (DNS names, wildcards, or short service "
                         "names); empty for a delegate VirtualService."),
        "gateways": strings("Gateways (name or namespace/name) whose traffic these rules apply "
                            "to; 'mesh' means sidecars; empty means mesh only."),
        "http": array("HTTP rules, tried in order; the first that matches wins.", http_route()),
        "tls": array("Rules for TLS traffic that is passed through (routed by SNI).",
                     obj("A TLS passthrough rule.", {
                         "match": array("Match blocks; any may match.",
                                        obj("Conditions on a TLS connection.", tls_match,
                                            required=["sniHosts"])),
                         "route": array("Weighted destinations.", route_destination()),
                     }, required=["match"])),
        "tcp": array("Rules for opaque TCP traffic.",
                     obj("A TCP rule.", {
                         "match": array("Match blocks; any may match.",
                                        obj("Conditions on a TCP connection.", tcp_match)),
                         "route": array("Weighted destinations.", route_destination()),
                     })),
        "exportTo": strings("Namespaces that may see this VirtualService ('.' this one, '*' all)."),
    })


# --- DestinationRule -------------------------------------------------------------------
def load_balancer():
    cookie = obj("Hash on a cookie, which the proxy sets when ttl is given and the cookie is absent.", {
        "name": string("Cookie name."),
        "path": string("Cookie path."),
        "ttl": duration("Cookie lifetime."),
        "attributes": array("Extra cookie attributes.", obj("A cookie attribute.", {
            "name": string("Attribute name."),
            "value": string("Attribute value."),
        }, required=["name"])),
    }, required=["name"])
    consistent_hash = obj("Session affinity by consistent hashing on one request property.", {
        "httpHeaderName": string("Hash on this request header."),
        "httpCookie": cookie,
        "useSourceIp": boolean("Hash on the client IP address."),
        "httpQueryParameterName": string("Hash on this query parameter."),
        "ringHash": obj("Use a ring hash.", {
            "minimumRingSize": uint64("Minimum number of virtual nodes on the ring."),
        }),
        "maglev": obj("Use Maglev hashing.", {
            "tableSize": uint64("Maglev lookup table size (a prime)."),
        }),
        "minimumRingSize": uint64("Deprecated; use ringHash.minimumRingSize."),
    })
    consistent_hash["allOf"] = [
        at_most_one_of("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"),
        at_most_one_of("ringHash", "maglev"),
    ]
    failover = obj("Where traffic goes when a locality has no healthy endpoints.", {
        "from": string("Source region."),
        "to": string("Region to fail over to."),
    })
    lb = with_oneof(obj("Load balancing algorithm and locality settings.", {
        "simple": enum("A load balancing algorithm without parameters.",
                       ["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN",
                        "LEAST_REQUEST"]),
        "consistentHash": consistent_hash,
        "localityLbSetting": obj("Locality-aware load balancing.", {
            "distribute": array("Weights of traffic from one locality to others.",
                                obj("Traffic split for clients in one locality.", {
                "from": string("Client locality region/zone/sub_zone; wildcards allowed."),
                "to": d("Target localities and their weights.",
                        {"type": "object",
                         "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 4294967295}}),
            })),
            "failover": array("Region failover order.", failover),
            "failoverPriority": strings("Labels ordering endpoints by how closely they match the client."),
            "enabled": boolean("Turn locality load balancing on or off."),
        }),
        "zoneAwareLbSetting": obj("Zone-aware load balancing.", {
            "enabled": boolean("Turn zone-aware load balancing on or off."),
            "failover": array("Zone failover order.", failover),
            "failoverPriority": strings("Labels ordering endpoints by how closely they match the client."),
            "minClusterSize": uint64("Below this cluster size zone awareness is off."),
        }),
        "warmupDurationSecs": min_duration("Ramp traffic to new endpoints up over this long."),
        "warmup": obj("Traffic ramp-up for new endpoints.", {
            "duration": min_duration("How long the ramp-up lasts."),
            "minimumPercent": number("Share of traffic a new endpoint starts with.", minimum=0, maximum=100),
            "aggression": number("Shape of the ramp (1 is linear).", minimum=1),
        }, required=["duration"]),
        "backendUtilization": obj("Weight endpoints by the load they report (ORCA metrics).", {
            "weightUpdatePeriod": duration("How often the weights are recomputed."),
            "weightExpirationPeriod": duration("An endpoint silent for this long gets the default weight."),
            "weightStabilizationPeriod": duration("How long an endpoint reports before its weight is used."),
            "errorUtilizationPenaltyPercent": uint32("Extra utilization for endpoints that "
                                                     "answer with errors, as a percentage."),
            "metricNamesForComputingUtilization": strings("ORCA metric names that make up the "
                                                          "utilization."),
        }),
    }), "simple", "consistentHash", "backendUtilization")
    lb["x-kubernetes-validations"] = [
        {"rule": "!(has(self.warmupDurationSecs) && has(self.warmup))",
         "message": "only one of warmupDurationSecs or warmup can be set"},
    ]
    return lb


def connection_pool():
    return obj("Limits on connections and requests to each upstream host (circuit breaking).", {
        "tcp": obj("Limits and timeouts of upstream connections (HTTP and TCP).", {
            "maxConnections": int32("Most connections open to one host.", minimum=0),
            "connectTimeout": min_duration("Timeout for establishing a connection."),
            "tcpKeepalive": obj("Enable TCP keepalive on upstream connections.", {
                "probes": uint32("Unanswered probes before the connection is dropped."),
                "time": min_duration("Idle time before the first probe."),
                "interval": min_duration("Time between probes."),
            }),
            "maxConnectionDuration": min_duration("Close connections older than this."),
            "idleTimeout": duration("Close connections idle for this long."),
        }),
        "http": obj("Limits of HTTP traffic to upstream hosts.", {
            "http1MaxPendingRequests": int32("Most requests waiting for a connection.", minimum=0),
            "http2MaxRequests": int32("Most requests in flight.", minimum=0),
            "maxRequestsPerConnection": int32("Requests per connection before it is closed "
                                              "(0: unlimited, 1: no keep-alive).", minimum=0),
            "maxRetries": int32("Most retries in flight to the cluster at once.", minimum=0),
            "idleTimeout": min_duration("Close upstream connections idle for this long."),
            "h2UpgradePolicy": enum("Whether HTTP/1.1 upstream connections are upgraded to HTTP/2.",
                                    ["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"]),
            "useClientProtocol": boolean("Use the client's HTTP version upstream."),
            "maxConcurrentStreams": int32("Most concurrent streams on one HTTP/2 connection.", minimum=0),
            "http2KeepAlive": obj("HTTP/2 PING keepalive.", {
                "interval": min_duration("Time between PINGs."),
                "timeout": min_duration("Time to wait for a PING reply."),
            }),
        }),
    })


def outlier_detection():
    return obj("Eject upstream hosts that keep failing, for a while (passive health checking).", {
        "consecutiveErrors": int32("Deprecated; use consecutive5xxErrors.", minimum=0),
        "splitExternalLocalOriginErrors": boolean("Count locally originated failures (connect "
                                                  "errors, timeouts) separately."),
        "consecutiveLocalOriginFailures": uint32("Local-origin failures in a row before ejection."),
        "consecutiveGatewayErrors": uint32("502/503/504 answers in a row before ejection."),
        "consecutive5xxErrors": uint32("5xx answers in a row before ejection."),
        "interval": min_duration("How often hosts are evaluated."),
        "baseEjectionTime": min_duration("Ejection time, multiplied by the number of ejections."),
        "maxEjectionPercent": int32("Most hosts that may be ejected, as a percentage.",
                                    minimum=0, maximum=100),
        "minHealthPercent": int32("Ejection stops when fewer hosts than this percentage are healthy.",
                                  minimum=0, maximum=100),
        "outlierDetectionHttpErrorCodes": d("Status codes counted as errors.",
                                            {"type": "array", "items": {"type": "integer",
                                                                        "minimum": 100,
                                                                        "maximum": 599}}),
    })


def client_tls():
    return obj("TLS used by the proxy when connecting upstream.", {
        "mode": enum("Whether and how upstream connections use TLS.",
                     ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]),
        "clientCertificate": string("File with the client certificate (MUTUAL)."),
        "privateKey": string("File with the client key (MUTUAL)."),
        "caCertificates": string("File with CA certificates to verify the server."),
        "credentialName": string("Secret with the client certificate, key and CA."),
        "subjectAltNames": strings("Accepted subject alternative names of the server certificate."),
        "sni": string("SNI name sent to the server."),
        "insecureSkipVerify": boolean("Do not verify the server certificate."),
        "caCrl": string("File with a certificate revocation list."),
    })


def traffic_policy(desc, nested=True):
    props = {
        "loadBalancer": load_balancer(),
        "connectionPool": connection_pool(),
        "outlierDetection": outlier_detection(),
        "tls": client_tls(),
    }
    if nested:
        port_policy = obj("Policy for one port of the service, overriding the general one.", {
            "port": obj("The port this policy applies to.", {"number": port_number("Port number, 1-65535.")}),
            **copy.deepcopy(props),
        })
        props["portLevelSettings"] = array("Per-port policies.", port_policy, maxItems=4096)
        props["tunnel"] = obj("Tunnel TCP traffic to the host over HTTP CONNECT or POST.", {
            "protocol": string("CONNECT (default) or POST."),
            "targetHost": string("Host the tunnel leads to."),
            "targetPort": port_number("Port the tunnel leads to."),
        }, required=["targetHost", "targetPort"])
        props["proxyProtocol"] = obj("Send a PROXY protocol header upstream.", {
            "version": enum("PROXY protocol version.", ["V1", "V2"]),
        })
        props["retryBudget"] = obj("Bound concurrent retries relative to active requests.", {
            "percent": number("Retries allowed as a percentage of active requests.", minimum=0, maximum=100),
            "minRetryConcurrency": uint32("Retries always allowed regardless of the percentage."),
            "budgetInterval": duration("Window over which the budget is computed."),
        })
    return obj(desc, props)


def destination_rule_spec():
    return obj("Policies for traffic to one service after routing: load balancing, connection "
               "limits, outlier detection, TLS, and named subsets (versions). Istio reference: "
               "https://istio.io/latest/docs/reference/config/networking/destination-rule/", {
        "host": string("The service (short name or FQDN) these policies apply to."),
        "trafficPolicy": traffic_policy("Policies for all traffic to the host."),
        "subsets": array("Named groups of the host's endpoints, selected by labels.",
                         obj("A named subset of the service's endpoints.", {
                             "name": string("Subset name, referenced by VirtualService destinations.",
                                            minLength=1),
                             "labels": string_map("Labels an endpoint's pod must carry to belong here."),
                             "trafficPolicy": traffic_policy("Policies for this subset, overriding "
                                                             "the rule's own."),
                         }, required=["name"])),
        "exportTo": strings("Namespaces that may see this DestinationRule ('.' this one, '*' all)."),
        "workloadSelector": workload_selector("Apply only to client workloads with these labels."),
    }, required=["host"])


def service_entry_spec():
    def cel(rule, message):
        return {"rule": rule, "message": message}

    port = obj("A port of the service.", {
        "number": port_number("Port number, 1-65535."),
        "protocol": string("HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, MYSQL, REDIS "
                           "or UDP; unset: detected.", maxLength=256),
        "name": string("Name of the port (a DNS label), unique in the entry.", maxLength=256),
        "targetPort": port_number("Port the endpoints receive on, when they do not name one."),
    }, required=["number", "name"])
    endpoint_port = {"type": "integer", "minimum": 1, "maximum": 65535}
    endpoint = obj("One endpoint of the service (a WorkloadEntry).", {
        "address": string("IP address, DNS name (resolution DNS) or unix:// socket path.",
                          maxLength=256, **{"x-kubernetes-validations": [
                              cel('self.startsWith("unix://") ? (self.substring(7, 8) == "/" || '
                                  'self.substring(7, 8) == "@") : true',
                                  "UDS must be an absolute path or abstract socket"),
                              cel('self.startsWith("unix://") ? !self.endsWith("/") : true',
                                  "UDS may not be a dir"),
                          ]}),
        "ports": d("This endpoint's port for each service port, by the port's name.",
                   {"type": "object", "additionalProperties": endpoint_port,
                    "maxProperties": 128,
                    "x-kubernetes-validations": [
                        cel('self.all(key, size(key) < 63 && '
                            'key.matches("^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$"))',
                            "port name must be valid")]}),
        "labels": string_map("Labels of the endpoint (subsets select by them).",
                             maxProperties=256),
        "network": string("Network the endpoint is in.", maxLength=2048),
        "locality": string("Locality of the endpoint (region/zone/subzone).", maxLength=2048),
        "weight": uint32("Load-balancing weight of the endpoint."),
        "serviceAccount": string("Service account of the workload.", maxLength=253),
    })
    endpoint["x-kubernetes-validations"] = [
        cel("has(self.address) || has(self.network)", "Address is required"),
        cel('(has(self.address) ? self.address : "").startsWith("unix://") ? !has(self.ports) : true',
            "UDS may not include ports"),
    ]
    selector_labels = string_map("Labels a pod must carry (all of them).", maxProperties=256)
    selector_labels["additionalProperties"].update({
        "maxLength": 63,
        "x-kubernetes-validations": [cel('!self.contains("*")',
                                         "wildcard is not supported in selector")],
    })
    hosts = strings("Hosts of the service: DNS names, optionally with a leading wildcard.",
                    minItems=1, maxItems=256)
    hosts["items"]["x-kubernetes-validations"] = [cel('self != "*"', "hostname cannot be wildcard")]
    addresses = strings("Virtual IPs or CIDRs of the service.", maxItems=256)
    addresses["items"]["maxLength"] = 64
    # Ports are a map keyed by name, as in Istio's CRD: a name twice is refused, and
    # server-side apply merges the list by name.
    ports = array("Ports of the service.", port, maxItems=256, **{
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
        "x-kubernetes-validations": [
            cel("self.all(l1, self.exists_one(l2, l1.number == l2.number))",
                "port number cannot be duplicated")]})
    spec = obj("Adds hosts to the mesh's service registry: services outside the cluster (APIs, "
               "databases, VMs) or inside it, with their ports and endpoints, so that "
               "VirtualServices and DestinationRules can route to them.", {
        "hosts": hosts,
        "addresses": addresses,
        "ports": ports,
        "location": enum("Whether the service is part of the mesh.",
                         ["MESH_EXTERNAL", "MESH_INTERNAL"]),
        "resolution": enum("How the endpoints are found: NONE (the address the client used), "
                           "STATIC (the endpoints' IPs), DNS, DNS_ROUND_ROBIN or DYNAMIC_DNS "
                           "(each request's own host, resolved when it arrives).",
                           ["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"]),
        "endpoints": array("Endpoints of the service.", endpoint, maxItems=4096),
        "workloadSelector": obj("Pods (of the entry's namespace) that are the endpoints.", {
            "labels": selector_labels,
        }),
        "exportTo": strings("Namespaces that may see this entry ('.' this one, '*' all)."),
        "subjectAltNames": strings("Subject alternative names the endpoints' certificates carry."),
    }, required=["hosts"])
    # Istio's own rules, with its messages.
    spec["x-kubernetes-validations"] = [
        cel("(has(self.workloadSelector) ? 1 : 0) + (has(self.endpoints) ? 1 : 0) <= 1",
            "only one of WorkloadSelector or Endpoints can be set"),
        cel('!((has(self.addresses) ? self.addresses : []).exists(k, k.contains("/")) && '
            '!((has(self.resolution) ? self.resolution : "NONE") in ["STATIC", "NONE"]))',
            "CIDR addresses are allowed only for NONE/STATIC resolution types"),
        cel('((has(self.resolution) ? self.resolution : "NONE") == "NONE") ? '
            '!has(self.endpoints) : true', "NONE mode cannot set endpoints"),
        cel('((has(self.resolution) ? self.resolution : "") == "DNS_ROUND_ROBIN") ? '
            '((has(self.endpoints) ? self.endpoints : []).size() <= 1) : true',
            "DNS_ROUND_ROBIN mode cannot have multiple endpoints"),
    ]
    return spec


# --- CRD assembly ----------------------------------------------------------------------
AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
       "description": "Time since the object was created."}


def crd(kind, plural, short, spec, columns):
    versions = []
    for v in VERSIONS:
        versions.append({
            "name": v,
            "served": True,
            "storage": v == STORAGE,
            "additionalPrinterColumns": copy.deepcopy(columns),
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": copy.deepcopy(spec),
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
                "required": ["spec"],
            }},
            "subresources": {"status": {}},
        })
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "skiff"},
            "annotations": {"helm.sh/resource-policy": "keep"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": kind + "List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["istio-io", "networking-istio-io"],
            },
            "scope": "Namespaced",
            "versions": versions,
        },
    }


HEADER = """\
# networking.istio.io {kind}: served as v1 (storage), v1beta1 and v1alpha3 with one schema.
# Generated by tests/kube/tools/crdgen/gen_crds.py from Istio's documented fields; edit the
# generator, not this file.
"""


def main():
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", ".."))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "crds")
    vs_cols = [
        {"name": "Gateways", "type": "string", "jsonPath": ".spec.gateways",
         "description": "Gateways the routes apply to"},
        {"name": "Hosts", "type": "string", "jsonPath": ".spec.hosts",
         "description": "Hosts the routes apply to"},
        AGE,
    ]
    dr_cols = [
        {"name": "Host", "type": "string", "jsonPath": ".spec.host",
         "description": "Service the policies apply to"},
        AGE,
    ]
    se_cols = [
        {"name": "Hosts", "type": "string", "jsonPath": ".spec.hosts",
         "description": "The hosts associated with the ServiceEntry"},
        {"name": "Location", "type": "string", "jsonPath": ".spec.location",
         "description": "Whether the service is external to the mesh or part of the mesh "
                        "(MESH_EXTERNAL or MESH_INTERNAL)"},
        {"name": "Resolution", "type": "string", "jsonPath": ".spec.resolution",
         "description": "Service resolution mode for the hosts (NONE, STATIC, or DNS)"},
        AGE,
    ]
    docs = {
        "gateway.yaml": crd("Gateway", "gateways", "gw", gateway_spec(), [AGE]),
        "virtualservice.yaml": crd("VirtualService", "virtualservices", "vs", virtual_service_spec(), vs_cols),
        "destinationrule.yaml": crd("DestinationRule", "destinationrules", "dr", destination_rule_spec(), dr_cols),
        "serviceentry.yaml": crd("ServiceEntry", "serviceentries", "se", service_entry_spec(), se_cols),
    }

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):  # write every schema out in full, no &anchors
            return True

    for name, doc in docs.items():
        text = HEADER.format(kind=doc["spec"]["names"]["kind"])
        text += yaml.dump(doc, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            f.write(text)
    with open(os.path.join(out_dir, "Kustomization"), "w", encoding="utf-8") as f:
        f.write("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
                + "".join(f"- {n}\n" for n in docs))


if __name__ == "__main__":
    main()
