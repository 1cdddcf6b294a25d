# SPDX-License-Identifier: Apache-2.0
"""The Kubernetes side: CRDs, the VirtualMachine index, the Zone controller, leader election, sinks.

Only this package imports a Kubernetes client (style.md rule 4).
"""
