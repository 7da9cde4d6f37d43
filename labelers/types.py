from typing import Any, TypeAlias

# The authenticated user. DRF types ``request.user`` as ``User | AnonymousUser`` although the
# permission classes guarantee a real user by the time a service runs; services take this alias
# rather than casting at every call site.
AuthUser: TypeAlias = Any
