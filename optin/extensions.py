"""Flask extensions, created once here and bound to the app in ``create_app``.

Creating them at module level (and binding later) is what lets every other
module import ``db`` without importing the app: no circular imports.
"""

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
api = Api()
# Limits are declared on the routes; storage comes from OPTIN_RATELIMIT_STORAGE_URL.
limiter = Limiter(key_func=get_remote_address, default_limits=[])
