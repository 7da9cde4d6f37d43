"""factory_boy factories for the domain models."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from annotation.models import Project, Prompt, Response, ResponseSet, ResponseSetItem
from labelers.models import LabelerProfile, Role


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery")

    @factory.post_generation
    def role(self, create: bool, extracted: str | None, **kwargs: object) -> None:
        if not create:
            return
        LabelerProfile.objects.create(user=self, role=extracted or Role.LABELER)
        self.is_staff = (extracted or Role.LABELER) == Role.ADMIN
        self.save()


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    k = 4
    overlap = 3


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    project = factory.SubFactory(ProjectFactory)
    external_id = factory.Sequence(lambda n: f"p{n}")
    text = factory.Sequence(lambda n: f"Prompt number {n}: explain something.")


def response_set_create(
    *, project: Project, prompt: Prompt | None = None, texts: list[str] | None = None
) -> ResponseSet:
    """A response set of ``project.k`` responses (texts given or made up)."""
    prompt = prompt or PromptFactory(project=project)
    texts = texts or [f"Answer {i} to {prompt.external_id}" for i in range(project.k)]
    response_set = ResponseSet.objects.create(project=project, prompt=prompt, required_count=project.overlap)
    for position, text in enumerate(texts):
        response = Response.objects.create(prompt=prompt, text=text)
        ResponseSetItem.objects.create(response_set=response_set, response=response, position=position)
    return response_set
