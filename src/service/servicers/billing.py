"""BillingService: cost estimates, monthly spending caps and the organization's usage."""

from __future__ import annotations

import grpc

from beacon.v1 import billing_service_pb2 as pb
from beacon.v1 import billing_service_pb2_grpc
from service.app import App
from service.auth.context import current_actor
from service.domain.money import caps
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
    """Each handler converts the request, makes one call to `service.application.billing`
    and converts the result."""

    def __init__(self, app: App) -> None:
        self.billing = app.services.billing

    async def GetCostEstimate(
        self, request: pb.GetCostEstimateRequest, context: grpc.aio.ServicerContext
    ) -> pb.CostEstimate:
        return estimate_to_proto(await self.billing.estimate(request.workspace_id))

    async def SetSpendingCap(
        self, request: pb.SetSpendingCapRequest, context: grpc.aio.ServicerContext
    ) -> pb.Spending:
        spending = await self.billing.set_spending_cap(
            current_actor(),
            request.organization_id,
            request.workspace_id,
            request.monthly_cap_micros,
        )
        return spending_to_proto(spending)

    async def GetSpending(
        self, request: pb.GetSpendingRequest, context: grpc.aio.ServicerContext
    ) -> pb.Spending:
        return spending_to_proto(await self.billing.spending(request.organization_id))

    async def ListUsage(
        self, request: pb.ListUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListUsageResponse:
        page = await self.billing.list_usage(
            request.organization_id,
            request.months,
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
