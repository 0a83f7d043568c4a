//! (to be written)

use utoipa_axum::router::OpenApiRouter;

use super::AppState;

/// This module's routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
