"""BillingService: cost estimates, monthly spending caps and the organization's usage."""

from __future__ import annotations

import grpc

from beacon.v1 import billing_service_pb2 as pb
from beacon.v1 import billing_service_pb2_grpc
from service.app import App
from service.auth.context import current_actor
from service.clock import utcnow
from service.domain.money import caps
from service.domain.money.estimates import Pricing
from service.servicers.convert import estimate_to_proto


def spending_to_proto(spending: caps.Spending) -> pb.Spending:
    return pb.Spending(
        organization_id=spending.organization_id,
        monthly_cap_micros=spending.monthly_cap_micros,
        month_to_date_micros=spending.month_to_date_micros,
        workspaces=[
            pb.WorkspaceSpending(
                workspace_id=w.workspace_id,
                monthly_cap_micros=w.monthly_cap_micros,
                month_to_date_micros=w.month_to_date_micros,
            )
            for w in spending.workspaces
        ],
    )


class BillingServicer(billing_service_pb2_grpc.BillingServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    async def GetCostEstimate(
        self, request: pb.GetCostEstimateRequest, context: grpc.aio.ServicerContext
    ) -> pb.CostEstimate:
        settings = self.app.settings
        async with self.app.db.transaction(write=False) as session:
            estimate = await caps.estimate_workspace(
                session,
                request.workspace_id,
                configured=settings.configured_providers(),
                pricing=Pricing.from_settings(settings),
                now=utcnow(),
            )
        return estimate_to_proto(estimate)

    async def SetSpendingCap(
        self, request: pb.SetSpendingCapRequest, context: grpc.aio.ServicerContext
    ) -> pb.Spending:
        async with self.app.db.transaction() as session:
            spending = await caps.set_spending_cap(
                session,
                current_actor(),
                request.organization_id,
                request.workspace_id,
                request.monthly_cap_micros,
                now=utcnow(),
            )
        return spending_to_proto(spending)

    async def GetSpending(
        self, request: pb.GetSpendingRequest, context: grpc.aio.ServicerContext
    ) -> pb.Spending:
        async with self.app.db.transaction(write=False) as session:
            spending = await caps.spending(session, request.organization_id, utcnow())
        return spending_to_proto(spending)

    async def ListUsage(
        self, request: pb.ListUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListUsageResponse:
        async with self.app.db.transaction(write=False) as session:
            page = await caps.list_usage(
                session,
                request.organization_id,
                request.months,
                utcnow(),
                page_size=request.page_size,
                page_token=request.page_token,
            )
        return pb.ListUsageResponse(
            next_page_token=page.next_page_token,
            rows=[
                pb.UsageRow(
                    month=row.month,
                    workspace_id=row.workspace_id,
                    provider=row.provider,
                    answers=row.answers,
                    input_tokens=row.input_tokens,
                    output_tokens=row.output_tokens,
                    search_calls=row.search_calls,
                    cost_micros=row.cost_micros,
                )
                for row in page.rows
            ],
        )


def add(server: grpc.aio.Server, app: App) -> str:
    billing_service_pb2_grpc.add_BillingServiceServicer_to_server(BillingServicer(app), server)
    return str(pb.DESCRIPTOR.services_by_name["BillingService"].full_name)
